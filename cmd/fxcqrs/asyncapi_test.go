package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// asyncapi prints the document a console serves, with the header its
// authorization asks for, and refuses what is not an AsyncAPI 3 document.
func TestAsyncAPICommand(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("X-Operator") != "yes":
			http.Error(w, "forbidden", http.StatusForbidden)
		case r.URL.Path == "/old.json":
			_, _ = w.Write([]byte(`{"asyncapi":"2.6.0"}`))
		default:
			_, _ = w.Write([]byte(`{"asyncapi":"3.0.0","info":{"title":"billing","version":"1.0.0"}}`))
		}
	}))
	defer srv.Close()
	var out bytes.Buffer
	err := run([]string{"asyncapi", srv.URL + "/asyncapi.json"}, &out)
	require.ErrorContains(t, err, "403 Forbidden")
	t.Setenv("FXCQRS_HEADER", "X-Operator: yes")
	require.NoError(t, run([]string{"asyncapi", srv.URL + "/asyncapi.json"}, &out))
	assert.Contains(t, out.String(), `"title": "billing"`)
	require.ErrorContains(t, run([]string{"asyncapi", srv.URL + "/old.json"}, &out), "no AsyncAPI 3 document")
}
