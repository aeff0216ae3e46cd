package fxsaga_test

import (
	"context"
	"strings"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// Under Module, a SQL store whose tables were never migrated fails start
// with an error that says what to do, instead of logging recovery errors
// forever.
func TestModuleChecksTheSchema(t *testing.T) {
	t.Parallel()
	outboxtest.ForEachEmpty(t, func(t *testing.T, d outboxtest.Database) {
		store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		app := fx.New(fx.NopLogger,
			fxcqrs.Module, fxsaga.Module,
			fx.Supply(fx.Annotate(store, fx.As(new(fxsaga.Store))), newWorld()),
			fxsaga.Register[Order](orderSaga),
		)
		require.NoError(t, app.Err())
		err = app.Start(context.Background())
		require.ErrorContains(t, err, "table fxcqrs_saga_migrations cannot be read")
		require.ErrorContains(t, err, "run fxsaga.Migrate")

		require.NoError(t, fxsaga.Migrate(context.Background(), d.DB, d.Dialect, fxsaga.Tables{}))
		require.NoError(t, store.CheckSchema(context.Background()))
	})
}

// Saga tables at the longest names migrate with their index; two roles
// cannot share a table, nor take the outbox's.
func TestSagaTableNames(t *testing.T) {
	t.Parallel()
	long := fxsaga.Tables{Sagas: strings.Repeat("s", 63), Log: strings.Repeat("l", 63), Migrations: strings.Repeat("m", 63)}
	outboxtest.ForEachEmpty(t, func(t *testing.T, d outboxtest.Database) {
		require.NoError(t, fxsaga.Migrate(context.Background(), d.DB, d.Dialect, long))
		schema, err := fxsaga.Schema(d.Dialect, long)
		require.NoError(t, err)
		assert.Contains(t, schema, "_name_status", "the (name, status) index is named")
		assert.NotContains(t, schema, long.Sagas+"_name_status", "and fits")
	})
	_, err := fxsaga.Schema(fxoutbox.SQLite, fxsaga.Tables{Sagas: "x", Log: "x"})
	require.ErrorContains(t, err, `tables Sagas and Log are both named "x"`)
	_, err = fxsaga.Schema(fxoutbox.SQLite, fxsaga.Tables{Log: "fxcqrs_outbox"})
	require.ErrorContains(t, err, "another fxcqrs module uses")
}
