package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/asyncapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

var update = flag.Bool("update", false, "rewrite testdata/asyncapi-*.json from the example's buses")

// Each service's AsyncAPI document, from its bus (built, not started:
// no Kafka needed), is the one in testdata/asyncapi-<service>.json: the
// test fails when the example's contract drifts from the checked-in
// documents (`go test -run TestContract -update` rewrites them), and
// fxbus/asyncapi/asyncapitest validates them against the AsyncAPI 3.0
// schema.
func TestContract(t *testing.T) {
	for service, wire := range map[string]fx.Option{"orders": ordersBus("orders.placed"), "billing": billingBus("orders.placed")} {
		var bus *fxbus.Bus
		app := fx.New(fx.NopLogger, fxcqrs.Module, fxbus.Module, wire, fx.Populate(&bus))
		require.NoError(t, app.Err())
		checkDocument(t, "asyncapi-"+service+".json",
			asyncapi.Info{Title: service, Version: "1.0.0", Description: "The " + service + " service of examples/kafka."}, bus.Contract())
		require.NoError(t, bus.Stop(context.Background()))
	}
}

// checkDocument compares c's document with testdata/file, or writes it
// there with -update.
func checkDocument(t *testing.T, file string, info asyncapi.Info, c fxbus.Contract) {
	t.Helper()
	doc, err := asyncapi.Document(info, c)
	require.NoError(t, err)
	doc = append(doc, '\n')
	path := filepath.Join("testdata", file)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, doc, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "go test -run TestContract -update writes it")
	assert.Equal(t, string(want), string(doc), "%s drifted from the example's bus: go test -run TestContract -update rewrites it", path)
}
