package fxconsole_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxconsole"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// Under fx, the console takes the graph's health checks, and the
// lifecycle starts its sampling and stops it.
func TestModule(t *testing.T) {
	clock := outboxtest.NewClock(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	var c *fxconsole.Console
	app := fx.New(fx.NopLogger, fxconsole.Module,
		fx.Supply(fxconsole.Config{InsecureAllowEveryone: true, Now: clock.Now, After: clock.After}),
		fxcqrs.AsCheck(func() fxcqrs.Check {
			return fxcqrs.Check{Name: "broker", Readiness: true, Run: func(context.Context) error { return errors.New("away") }}
		}),
		fx.Populate(&c))
	require.NoError(t, app.Err())
	ctx := context.Background()
	require.NoError(t, app.Start(ctx))
	assert.Len(t, c.Samples(), 1, "started: a sample at once")
	code, body := get(t, c, "/")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "broker (readiness): <b>failing</b>: away")
	assert.NotContains(t, body, "not sampling")
	require.NoError(t, app.Stop(ctx))
	_, body = get(t, c, "/")
	assert.Contains(t, body, "not sampling", "stopped")
}
