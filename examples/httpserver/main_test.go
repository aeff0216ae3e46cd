package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startApp starts the whole application on a free port of 127.0.0.1.
func startApp(t *testing.T, work ReserveWork) (*fxtest.App, string) {
	t.Helper()
	var srv *Server
	app := fxtest.New(t, fx.NopLogger, Options("127.0.0.1:0", work), fx.Populate(&srv))
	app.RequireStart()
	return app, "http://" + srv.Addr().String()
}

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestHTTPServer(t *testing.T) {
	app, base := startApp(t, func(context.Context, int) {})
	defer app.RequireStop()

	status, body := post(t, base+"/orders", `{"item":"keyboard","qty":2}`)
	require.Equal(t, http.StatusCreated, status, body)
	assert.Equal(t, float64(1), body["id"])
	post(t, base+"/orders", `{"item":"mouse","qty":1}`)

	code, order := get(t, base+"/orders/1")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"id":1,"item":"keyboard","qty":2,"status":"reserved"}`, order,
		"the event handler ran before the command's response")

	code, _ = get(t, base+"/orders/99")
	assert.Equal(t, http.StatusNotFound, code)
	status, body = post(t, base+"/orders", `{"item":"cable","qty":0}`)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, "qty must be positive", body["error"])

	resp, err := http.Get(base + "/orders/stream")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, data)
		}
	}
	require.Len(t, events, 3)
	assert.JSONEq(t, `{"id":1,"item":"keyboard","qty":2,"status":"reserved"}`, events[0])
	assert.JSONEq(t, `{"id":2,"item":"mouse","qty":1,"status":"reserved"}`, events[1])
	assert.Equal(t, "{}", events[2])
}

// TestGracefulShutdown: stopping the app while a request's events run lets
// them finish and the request succeed.
func TestGracefulShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	app, base := startApp(t, func(_ context.Context, id int) {
		close(entered)
		<-release
	})

	type result struct {
		status int
		body   map[string]any
	}
	done := make(chan result, 1)
	go func() {
		s, b := post(t, base+"/orders", `{"item":"desk","qty":1}`)
		done <- result{s, b}
	}()
	<-entered // the request's event handler is running

	stopped := make(chan error, 1)
	go func() { stopped <- app.Stop(context.Background()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned with a request in flight: %v", err)
	case res := <-done:
		t.Fatalf("the request returned before its events: %v", res)
	default:
	}
	close(release)
	res := <-done
	assert.Equal(t, http.StatusCreated, res.status)
	require.NoError(t, <-stopped)
}
