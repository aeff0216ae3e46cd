package fxsaga_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/require"
)

// database is one test's own database, with the outbox's and the saga's
// tables (see outboxtest).
type database = outboxtest.Database

// openDatabase makes a database of the test's own on dialect.
func openDatabase(t testing.TB, d fxoutbox.Dialect) database {
	t.Helper()
	db := outboxtest.Open(t, d)
	require.NoError(t, fxsaga.Migrate(context.Background(), db.DB, d, fxsaga.Tables{}))
	return db
}

// forEachDatabase runs test on each dialect, in subtests that skip (or
// fail, in CI) on their own when their server is unreachable.
func forEachDatabase(t *testing.T, test func(t *testing.T, d database)) {
	for _, dialect := range outboxtest.Dialects {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			test(t, openDatabase(t, dialect))
		})
	}
}

var count = outboxtest.Count

// setup is what newSQLRunner varies.
type setup struct {
	lease    time.Duration       // the store's; 0: the default
	config   fxsaga.RunnerConfig // the runner's
	routes   []fxbus.Routing     // the bus's
	handlers []any               // command handlers beside StepHandler
}

// newSQLRunner is a runner on the SQL store of d (an owner of its own),
// whose steps run under the outbox's unit of work. The bus routes to an
// in-process broker, but nothing relays (the outbox is not started): the
// routed events stay in the outbox table.
func newSQLRunner(t testing.TB, d database, s setup) (*fxsaga.Runner, *fxsaga.SQL, *fxcqrs.Mediator) {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: gc}, s.routes, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(append([]any{fxsaga.StepHandler{}}, s.handlers...)...),
		fxcqrs.WithMiddleware(o.UnitOfWork()))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, s.lease)
	require.NoError(t, err)
	return fxsaga.NewRunner(m, store, s.config, nil), store, m
}
