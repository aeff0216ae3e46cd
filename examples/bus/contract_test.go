package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/asyncapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

var update = flag.Bool("update", false, "rewrite testdata/asyncapi-*.json from the example's buses")

// Each service's AsyncAPI document, from the buses of one run over the
// in-process broker, is the one in testdata/asyncapi-<service>.json:
// the test fails when the example's contract drifts from the checked-in
// documents (`go test -run TestContract -update` rewrites them), and
// fxbus/asyncapi/asyncapitest validates them against the AsyncAPI 3.0
// schema.
func TestContract(t *testing.T) {
	inProcess, closeIt := goChannel()
	t.Cleanup(func() { require.NoError(t, closeIt()) })
	buses := map[string]*fxbus.Bus{}
	b := func(service string) fx.Option {
		return fx.Options(inProcess(service), fx.Invoke(func(bus *fxbus.Bus) { buses[service] = bus }))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, run(ctx, io.Discard, b, ""))
	require.Len(t, buses, 2)
	for service, bus := range buses {
		checkDocument(t, "asyncapi-"+service+".json",
			asyncapi.Info{Title: service, Version: "1.0.0", Description: "The " + service + " service of examples/bus."}, bus.Contract())
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
