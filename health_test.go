package fxcqrs_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// Liveness fails only on liveness checks; readiness on any; a check that
// panics or outlives the timeout fails, named, without taking anything
// down.
func TestHealth(t *testing.T) {
	t.Parallel()
	lagging := errors.New("lag 2m0s, over 1m0s")
	h := fxcqrs.NewHealth(
		fxcqrs.Check{Name: "db", Run: func(context.Context) error { return nil }},
		fxcqrs.Check{Name: "relay", Readiness: true, Run: func(context.Context) error { return lagging }},
	)
	require.NoError(t, h.Live(context.Background()))
	err := h.Ready(context.Background())
	var ce *fxcqrs.CheckError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, "relay", ce.Name)
	assert.ErrorIs(t, err, lagging)

	stuck := fxcqrs.NewHealth(
		fxcqrs.Check{Name: "panics", Run: func(context.Context) error { panic("boom") }},
		fxcqrs.Check{Name: "hangs", Run: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
	)
	stuck.Timeout = 10 * time.Millisecond
	err = stuck.Live(context.Background())
	assert.ErrorContains(t, err, "panics: panicked: boom")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// The probes' handler: 200 when the checks pass, 503 with the failing
// checks named, /healthz for liveness, anything else for readiness.
func TestHealthHandler(t *testing.T) {
	t.Parallel()
	var h *fxcqrs.Health
	app := fxtest.New(t,
		fxcqrs.HealthModule,
		fxcqrs.AsCheck(func() fxcqrs.Check {
			return fxcqrs.Check{Name: "relay", Readiness: true, Run: func(context.Context) error { return errors.New("behind") }}
		}),
		fxcqrs.AsCheck(func() fxcqrs.Check {
			return fxcqrs.Check{Name: "db", Run: func(context.Context) error { return nil }}
		}),
		fx.Populate(&h),
	)
	app.RequireStart()
	defer app.RequireStop()
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	get := func(path string) (int, map[string]any) {
		res, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer res.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
		return res.StatusCode, body
	}
	code, body := get("/healthz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok", body["status"])
	code, body = get("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, map[string]any{"relay": "behind"}, body["failing"])
	res, err := http.Post(srv.URL+"/readyz", "text/plain", nil)
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
}
