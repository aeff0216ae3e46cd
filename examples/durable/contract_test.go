package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/asyncapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

var update = flag.Bool("update", false, "rewrite testdata/asyncapi-*.json from the example's bus")

// The service's AsyncAPI document, from the bus of its fx app (built on
// a SQLite file, not started), is the one in
// testdata/asyncapi-service.json: the test fails when the example's
// contract drifts from the checked-in document (`go test -run
// TestContract -update` rewrites it), and fxbus/asyncapi/asyncapitest
// validates it against the AsyncAPI 3.0 schema. Its durable events and
// schedules go through the outbox's tables, not a broker: the document
// has no channels, and says so by having none.
func TestContract(t *testing.T) {
	db, err := open(filepath.Join(t.TempDir(), "contract.db"))
	require.NoError(t, err)
	defer db.Close()
	var (
		m   *fxcqrs.Mediator
		bus *fxbus.Bus
	)
	require.NoError(t, app(db, &env{}, time.Now, &m, fx.Populate(&bus)).Err())
	c := bus.Contract()
	assert.Empty(t, c.Routes)
	assert.Empty(t, c.Subscriptions)
	checkDocument(t, "asyncapi-service.json",
		asyncapi.Info{Title: "durable", Version: "1.0.0", Description: "The service of examples/durable: its durable events and schedules stay in its database."}, c)
	require.NoError(t, bus.Stop(context.Background()))
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
