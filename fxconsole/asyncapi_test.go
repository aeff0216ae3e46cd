package fxconsole_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/asyncapi"
	"github.com/fxcqrs/fxcqrs/fxconsole"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type Shipped struct {
	ID string `json:"id"`
}

// The console serves the bus's AsyncAPI document, to the operators its
// authorization lets in only.
func TestConsoleServesTheContract(t *testing.T) {
	t.Parallel()
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer gc.Close()
	bus, err := fxbus.New(fxbus.Config{Publisher: gc}, []fxbus.Routing{fxbus.NewRoute[Shipped]("shipments")}, nil)
	require.NoError(t, err)
	c, err := fxconsole.New(nil, nil, fxconsole.Config{Authorize: func(r *http.Request) bool { return r.Header.Get("X-Operator") == "yes" }},
		fxconsole.WithContract(asyncapi.Info{Title: "shipping", Version: "2.1.0"}, bus.Contract))
	require.NoError(t, err)
	code, _ := get(t, c, "/asyncapi.json")
	assert.Equal(t, http.StatusForbidden, code)
	code, body := get(t, c, "/asyncapi.json", "X-Operator", "yes")
	require.Equal(t, http.StatusOK, code, body)
	var doc struct {
		AsyncAPI string
		Info     struct{ Title string }
		Channels map[string]struct{ Address string }
	}
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	assert.Equal(t, "3.0.0", doc.AsyncAPI)
	assert.Equal(t, "shipping", doc.Info.Title)
	assert.Equal(t, "shipments", doc.Channels["shipments"].Address)
}
