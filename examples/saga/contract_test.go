package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/asyncapi"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

var update = flag.Bool("update", false, "rewrite testdata/asyncapi-*.json from the example's buses")

// Each service's AsyncAPI document, from the bus of its fx app (built on
// a SQLite file and the in-process broker, not started), is the one in
// testdata/asyncapi-<service>.json: the test fails when the example's
// contract drifts from the checked-in documents (`go test -run
// TestContract -update` rewrites them), and
// fxbus/asyncapi/asyncapitest validates them against the AsyncAPI 3.0
// schema.
func TestContract(t *testing.T) {
	dir := t.TempDir()
	o := out{mu: &sync.Mutex{}, w: io.Discard}
	opts := options{clock: wallClock{}, deadline: 30 * time.Minute}
	for _, c := range []struct {
		name string
		app  func(svc service) *fx.App
	}{
		{"orders", func(svc service) *fx.App {
			var (
				runner *fxsaga.Runner
				saga   *fxsaga.Saga[Order]
			)
			return ordersApp(svc, o, opts, nil, &runner, &saga)
		}},
		{"payments", func(svc service) *fx.App { return paymentsApp(svc, o, opts, nil) }},
	} {
		schema, tables := ordersSchema, fxoutbox.Tables{}
		if c.name == "payments" {
			schema, tables = paymentsSchema, paymentsOutbox
		}
		svc, err := openService(dir, "", c.name, schema, tables, c.name == "orders")
		require.NoError(t, err)
		var bus *fxbus.Bus
		svc.broker = fx.Populate(&bus) // and fxbus's in-process broker
		require.NoError(t, c.app(svc).Err())
		checkDocument(t, "asyncapi-"+c.name+".json",
			asyncapi.Info{Title: c.name, Version: "1.0.0", Description: "The " + c.name + " service of examples/saga."}, bus.Contract())
		require.NoError(t, bus.Stop(context.Background()))
		require.NoError(t, svc.db.Close())
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
