package fxsaga_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// tenantSchema makes a PostgreSQL schema in main's database, with an
// effects table and nothing else, as tenant id's store; dropped at the
// end. It returns the store and the schema's name.
func tenantSchema(t *testing.T, main database, id string) (fxoutbox.TenantStore, string) {
	t.Helper()
	name := fmt.Sprintf("fxs_%d_%s", rand.Uint64()%1_000_000_000, id)
	_, err := main.DB.Exec("CREATE SCHEMA " + name)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = main.DB.Exec("DROP SCHEMA " + name + " CASCADE") })
	_, err = main.DB.Exec("CREATE TABLE " + name + ".effects (saga_key VARCHAR(128) NOT NULL)")
	require.NoError(t, err)
	return fxoutbox.TenantStore{ID: id, Schema: name}, name
}

// Under fx, with the SQL store and a PostgreSQL schema per tenant: the
// module gives the outbox its tables' migration, so that each tenant's
// schema has the saga tables from Start, and a tenant added while the
// service runs has them as soon as the outbox serves it (its clock moved
// poll interval by poll interval). Each tenant's saga is written in its
// schema's saga table, beside its effects, and nowhere else: not in the
// outbox's own schema (the default store), not in the other tenant's. A
// tenant added to the source but not yet served, and one that left it,
// start no saga: an error that wraps fxbus.ErrUnknownTenant, and no row
// in the default store.
func TestSagasInTenantSchemas(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	effectsTable(t, main)
	acme, inAcme := tenantSchema(t, main, "acme")
	globex, inGlobex := tenantSchema(t, main, "globex")
	src := &outboxtest.TenantSource{}
	src.Set(acme)
	c := newClock()
	var (
		runner *fxsaga.Runner
		outbox *fxoutbox.Outbox
	)
	app := fxtest.New(t, fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module, fxsaga.SQLStore,
		fx.Supply(main.DB, fxoutbox.Config{
			Dialect: fxoutbox.PostgreSQL, Now: c.Now, After: c.After, TenantStores: src,
			Relay: fxoutbox.RelayConfig{PollInterval: time.Second, Lease: 24 * time.Hour}, // the test moves the clock on
		}),
		fx.Supply(fxsaga.Config{Lease: 24 * time.Hour}),
		fx.Populate(&runner, &outbox),
	)
	app.RequireStart()
	defer app.RequireStop()
	ctx := context.Background()
	ts := newTenants()
	s := fxsaga.Define[Order]("schema order", tenantStep{name: "reserve", ts: ts}, tenantStep{name: "ship", ts: ts})
	sagas := func(where string) int { return count(t, main.DB, "SELECT COUNT(*) FROM "+where) }
	tables := func(schema string) int {
		return count(t, main.DB, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '"+schema+"' AND table_name LIKE 'fxcqrs_saga%'")
	}
	ms, err := fxsaga.Migrations(fxoutbox.PostgreSQL, fxsaga.Tables{})
	require.NoError(t, err)

	assert.Equal(t, 3, tables(inAcme), "migrated at Start: the sagas, their log, their migrations")
	assert.Equal(t, len(ms), sagas(inAcme+".fxcqrs_saga_migrations"))
	assert.Zero(t, tables(inGlobex), "not a tenant yet")
	_, err = fxsaga.Run(fxbus.WithTenant(ctx, "acme"), runner, s, Order{ID: 1})
	require.NoError(t, err)
	assert.Equal(t, []string{"act reserve@acme", "act ship@acme"}, ts.of(1))
	assert.Equal(t, 1, sagas(inAcme+".fxcqrs_sagas WHERE tenant = 'acme' AND status = 'COMPLETED'"), "in acme's schema")
	assert.Equal(t, 2, sagas(inAcme+".fxcqrs_saga_log"))
	assert.Equal(t, 2, sagas(inAcme+".effects"), "beside its steps' effects")
	assert.Zero(t, sagas("fxcqrs_sagas"), "not in the default store")
	assert.Zero(t, sagas("effects"))

	// Added to the source, not served yet: refused, nothing written.
	src.Set(acme, globex)
	_, err = fxsaga.Run(fxbus.WithTenant(ctx, "globex"), runner, s, Order{ID: 2})
	require.ErrorIs(t, err, fxbus.ErrUnknownTenant)
	assert.Zero(t, sagas("fxcqrs_sagas"), "the saga of a tenant not served yet is not written to the default store")
	assert.Zero(t, sagas("fxcqrs_saga_log"))
	assert.Empty(t, ts.of(2))

	// Served once the outbox's clock has moved on: its saga tables came
	// with its store's migration.
	require.Eventually(t, func() bool {
		if slices.Contains(outbox.Tenants(), "globex") {
			return true
		}
		c.Advance(time.Second)
		return false
	}, time.Minute, 5*time.Millisecond)
	assert.Equal(t, 3, tables(inGlobex), "served with its saga tables")
	assert.Equal(t, len(ms), sagas(inGlobex+".fxcqrs_saga_migrations"))
	_, err = fxsaga.Run(fxbus.WithTenant(ctx, "globex"), runner, s, Order{ID: 3})
	require.NoError(t, err)
	assert.Equal(t, 1, sagas(inGlobex+".fxcqrs_sagas WHERE tenant = 'globex' AND status = 'COMPLETED'"))
	assert.Equal(t, 1, sagas(inGlobex+".fxcqrs_sagas"))
	assert.Equal(t, 2, sagas(inGlobex+".effects"))
	assert.Equal(t, 1, sagas(inAcme+".fxcqrs_sagas"), "globex's saga is not in acme's schema")
	assert.Zero(t, sagas("fxcqrs_sagas"))

	// Gone from the source (drained): refused, nothing written.
	src.Set(globex)
	require.Eventually(t, func() bool {
		if !slices.Contains(outbox.Tenants(), "acme") {
			return true
		}
		c.Advance(time.Second)
		return false
	}, time.Minute, 5*time.Millisecond)
	_, err = fxsaga.Run(fxbus.WithTenant(ctx, "acme"), runner, s, Order{ID: 4})
	require.ErrorIs(t, err, fxbus.ErrUnknownTenant)
	assert.Zero(t, sagas("fxcqrs_sagas"), "the saga of a tenant that left is not written to the default store")
	assert.Equal(t, 1, sagas(inAcme+".fxcqrs_sagas"), "nor to its own store, which is drained")
	assert.Empty(t, ts.of(4))
}

// leavingStep acts as its tenantStep does, then takes its tenant's store
// out of service (the tenant left the outbox's source) while its own unit
// of work is still open: the steps after it find no store.
type leavingStep struct {
	tenantStep
	leave func()
}

func (s leavingStep) Act(ctx context.Context, o *Order) error {
	if err := s.tenantStep.Act(ctx, o); err != nil {
		return err
	}
	s.leave()
	return nil
}

// With a store per tenant (a StoresOnly Tenancy), a saga whose tenant's
// store stops being served between two steps is left as it stands in
// that store: the next step's unit of work is refused, Run returns an
// error that wraps fxbus.ErrUnknownTenant, and nothing is compensated,
// logged or written in the default store. A new saga of that tenant is
// refused, and recovery leaves it alone, until the store is served again:
// then recovery drives it on from where it stood.
func TestSagaOfATenantWithoutItsStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := &stores{list: []string{"", "x"}, by: map[string]*fxoutbox.Outbox{}, dbs: map[string]database{}, only: true}
	bus, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(t, err)
	for _, tenant := range []string{"", "x"} {
		d := openDatabase(t, fxoutbox.SQLite)
		effectsTable(t, d)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
		require.NoError(t, err)
		ts.by[tenant], ts.dbs[tenant] = o, d
	}
	main, x := ts.dbs[""].DB, ts.dbs["x"].DB
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}), fxcqrs.WithMiddleware(ts.unitOfWork()))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	replica := func(now func() time.Time) *fxsaga.Runner {
		store, err := fxsaga.NewSQL(main, fxoutbox.SQLite, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		fxsaga.SetClock(store, now)
		return fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{Tenancy: ts, CompensationBackoff: time.Millisecond}, nil)
	}
	rec := newTenants()
	s := fxsaga.Define[Order]("unserved", tenantStep{name: "reserve", ts: rec},
		leavingStep{tenantStep{name: "ship", ts: rec}, func() { ts.setGone("x", true) }}, tenantStep{name: "pack", ts: rec})

	_, err = fxsaga.Run(fxbus.WithTenant(ctx, "x"), replica(time.Now), s, Order{ID: 1})
	require.ErrorIs(t, err, fxbus.ErrUnknownTenant)
	var sagaErr *fxsaga.Error
	assert.False(t, errors.As(err, &sagaErr), "not a failure of the saga's: %v", err)
	assert.Equal(t, []string{"act reserve@x", "act ship@x"}, rec.of(1), "nothing compensated")
	assert.Equal(t, 1, count(t, x, "SELECT COUNT(*) FROM fxcqrs_sagas WHERE status = 'RUNNING' AND step = 2 AND tenant = 'x'"), "left as it stood, in its store")
	assert.Equal(t, 2, count(t, x, "SELECT COUNT(*) FROM fxcqrs_saga_log"), "the two steps that committed")
	assert.Zero(t, count(t, main, "SELECT COUNT(*) FROM fxcqrs_sagas"))
	assert.Zero(t, count(t, main, "SELECT COUNT(*) FROM fxcqrs_saga_log"), "its refused step is logged nowhere else")

	_, err = fxsaga.Run(fxbus.WithTenant(ctx, "x"), replica(time.Now), s, Order{ID: 2})
	require.ErrorIs(t, err, fxbus.ErrUnknownTenant, "a new saga of a tenant without its store")
	assert.Empty(t, rec.of(2))
	assert.Zero(t, count(t, main, "SELECT COUNT(*) FROM fxcqrs_sagas"), "is not written to the default store")
	assert.Equal(t, 1, count(t, x, "SELECT COUNT(*) FROM fxcqrs_sagas"))

	later := replica(func() time.Time { return time.Now().Add(time.Hour) }) // past the first's lease
	require.NoError(t, fxsaga.Recover(ctx, later, s), "the tenant's store is not walked while it is not served")
	assert.Equal(t, 1, count(t, x, "SELECT COUNT(*) FROM fxcqrs_sagas WHERE status = 'RUNNING'"))

	ts.setGone("x", false)
	require.NoError(t, fxsaga.Recover(ctx, later, s))
	assert.Equal(t, []string{"act reserve@x", "act ship@x", "act pack@x"}, rec.of(1), "driven on from where it stood")
	assert.Equal(t, 1, count(t, x, "SELECT COUNT(*) FROM fxcqrs_sagas WHERE status = 'COMPLETED'"))
	assert.Zero(t, count(t, main, "SELECT COUNT(*) FROM fxcqrs_sagas"))
}

// A tenant's sagas are written in its store with the SQL store's
// statements: under fx, a tenant store of another dialect than the saga
// store's fails Start, naming the tenant, rather than every saga of it
// later. With a Store that is no *SQL, no saga table is made in any
// tenant's store.
func TestTenantMigrationNeedsTheSagaStoresDialect(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	other := outboxtest.OpenEmpty(t, fxoutbox.SQLite).DB
	stores := fxoutbox.StaticTenantStores(fxoutbox.TenantStore{ID: "lite", DB: other, Dialect: fxoutbox.SQLite})
	app := fx.New(fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module, fxsaga.SQLStore,
		fx.Supply(main.DB, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, TenantStores: stores}),
	)
	require.NoError(t, app.Err())
	err := app.Start(context.Background())
	require.ErrorContains(t, err, `tenant "lite": fxsaga: the store's dialect is sqlite, the saga store's postgresql`)
	require.NoError(t, app.Stop(context.Background()))

	app = fx.New(fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module,
		fx.Supply(fx.Annotate(fxsaga.NewMemory(), fx.As(new(fxsaga.Store)))),
		fx.Supply(main.DB, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, TenantStores: stores}),
	)
	require.NoError(t, app.Start(context.Background()))
	require.NoError(t, app.Stop(context.Background()))
	assert.Zero(t, count(t, other, "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'fxcqrs_saga%'"), "no saga table for a memory store")
	assert.Equal(t, 1, count(t, other, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'fxcqrs_outbox'"), "the outbox's own, migrated")
}
