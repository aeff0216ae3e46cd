package fxoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// migrations is a TenantMigration that records each store it is run on,
// creates a table of its own there (in the store's schema, if it has one)
// and fails, with "no room", for the tenants in fail.
type migrations struct {
	name string

	mu   sync.Mutex
	seen []fxoutbox.TenantStore
	log  *[]string // shared by several, to see their order; may be nil
	fail map[string]bool
	// outboxFirst is whether each store's outbox tables were there when
	// it ran (SQLite and MariaDB stores, checked with CheckSchema).
	outboxFirst []bool
}

func newMigrations(name string) *migrations { return &migrations{name: name, fail: map[string]bool{}} }

func (m *migrations) migrate(ctx context.Context, s fxoutbox.TenantStore) error {
	m.mu.Lock()
	m.seen = append(m.seen, s)
	if m.log != nil {
		*m.log = append(*m.log, m.name+" "+s.ID)
	}
	fail := m.fail[s.ID]
	m.mu.Unlock()
	if fail {
		return errors.New("no room")
	}
	if s.Schema == "" {
		first := fxoutbox.CheckSchema(ctx, s.DB, s.Dialect, fxoutbox.Tables{}) == nil
		m.mu.Lock()
		m.outboxFirst = append(m.outboxFirst, first)
		m.mu.Unlock()
	}
	table := "beside_" + m.name
	if s.Schema != "" {
		table = s.Schema + "." + table
	}
	_, err := s.DB.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+table+" (id INTEGER)")
	return err
}

func (m *migrations) setFail(tenant string, fail bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[tenant] = fail
}

// ids is the tenants m ran on, in order.
func (m *migrations) ids() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, len(m.seen))
	for i, s := range m.seen {
		out[i] = s.ID
	}
	return out
}

func (m *migrations) stores() []fxoutbox.TenantStore {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.seen)
}

// Config.TenantMigrations run on every store at Start, after the
// outbox's own migration of it, with the store's database and dialect
// filled in; and on a store added while the outbox runs, before it is
// served, within a poll interval of the outbox's clock.
func TestTenantMigrationsRunForEveryStore(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	main := openDatabase(t, fxoutbox.SQLite)
	ordersTable(t, main.DB, "")
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 3)
	src := &outboxtest.TenantSource{}
	src.Set(tenants[0].store, tenants[1].store)
	var order []string
	first, second := newMigrations("first"), newMigrations("second")
	first.log, second.log = &order, &order
	r := newTenantStoresRig(t, main, src, fxoutbox.Config{
		Now: clock.Now, After: clock.After,
		Relay:            fxoutbox.RelayConfig{PollInterval: time.Second, RetryInitial: time.Second, RetryMax: time.Second, Lease: 24 * time.Hour},
		TenantMigrations: []fxoutbox.TenantMigration{first.migrate, second.migrate},
	}, false)
	first.mu.Lock()
	assert.Equal(t, []string{"first t0", "second t0", "first t1", "second t1"}, order, "in order, store by store")
	first.mu.Unlock()
	for i, s := range first.stores() {
		assert.Same(t, tenants[i].db, s.DB)
		assert.Equal(t, fxoutbox.SQLite, s.Dialect)
		assert.Empty(t, s.Schema)
	}
	assert.Equal(t, []bool{true, true}, first.outboxFirst, "after the outbox's own migration")

	src.Set(tenants[0].store, tenants[1].store, tenants[2].store)
	servedWithinAPoll(t, r.outbox, clock, 4)
	assert.Equal(t, []string{"t0", "t1", "t2"}, first.ids(), "once per store")
	assert.Equal(t, []string{"t0", "t1", "t2"}, second.ids())
	added := first.stores()[2]
	assert.Same(t, tenants[2].db, added.DB)
	assert.Equal(t, fxoutbox.SQLite, added.Dialect)
	assert.Equal(t, []bool{true, true, true}, first.outboxFirst)
	assert.Zero(t, count(t, tenants[2].db, "SELECT COUNT(*) FROM beside_second"), "its tables are there")
	require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(context.Background(), "t2"), r.m, PlaceOrder{ID: 1}))
}

// A store in a PostgreSQL schema of the outbox's database is given to
// the migrations with that database and the schema, and under fx the
// migrations of Config come first, then AsTenantMigration's.
func TestTenantMigrationOfASchema(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	schemas := tenantSchemas(t, main, "s", 1)
	configured, grouped := newMigrations("configured"), newMigrations("grouped")
	var order []string
	configured.log, grouped.log = &order, &order
	app := fxtest.New(t, fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(main.DB, fxoutbox.Config{
			Dialect: fxoutbox.PostgreSQL, TenantStores: fxoutbox.StaticTenantStores(storesOf(schemas)...),
			TenantMigrations: []fxoutbox.TenantMigration{configured.migrate},
		}),
		fxoutbox.AsTenantMigration(grouped.migrate),
	)
	app.RequireStart()
	defer app.RequireStop()
	assert.Equal(t, []string{"configured s0", "grouped s0"}, order)
	got := grouped.stores()
	require.Len(t, got, 1)
	assert.Equal(t, "s0", got[0].ID)
	assert.Same(t, main.DB, got[0].DB, "the outbox's database")
	assert.Equal(t, fxoutbox.PostgreSQL, got[0].Dialect)
	assert.Equal(t, schemas[0].in, got[0].Schema)
	assert.Zero(t, count(t, main.DB, "SELECT COUNT(*) FROM "+schemas[0].in+".beside_grouped"), "created in the schema")
}

// MigrateAll runs the migrations it is given on each store after the
// outbox's own, and stops at the first that fails, naming its tenant and
// its place.
func TestMigrateAllRunsTenantMigrations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 3)
	src := fxoutbox.StaticTenantStores(storesOf(tenants)...)
	var seen []string
	progress := func(tenant string, done, total int) {
		seen = append(seen, fmt.Sprintf("%s %d/%d", tenant, done, total))
	}
	m := newMigrations("all")
	m.setFail("t1", true)
	err := fxoutbox.MigrateAll(ctx, nil, src, fxoutbox.SQLite, fxoutbox.Tables{}, progress, m.migrate)
	require.ErrorContains(t, err, `tenant "t1" (2 of 3): no room`)
	assert.Equal(t, []string{"t0 1/3"}, seen)
	assert.Equal(t, []string{"t0", "t1"}, m.ids())

	seen = nil
	m.setFail("t1", false)
	require.NoError(t, fxoutbox.MigrateAll(ctx, nil, src, fxoutbox.SQLite, fxoutbox.Tables{}, progress, m.migrate))
	assert.Equal(t, []string{"t0 1/3", "t1 2/3", "t2 3/3"}, seen)
	assert.Equal(t, []string{"t0", "t1", "t0", "t1", "t2"}, m.ids(), "again on a store already migrated")
	assert.Equal(t, []bool{true, true, true, true}, m.outboxFirst)
	for _, ts := range tenants {
		assert.Zero(t, count(t, ts.db, "SELECT COUNT(*) FROM beside_all"))
	}
}

// A TenantMigration that fails keeps its store from being served: at
// Start, Start fails with an error that names the tenant; for a store
// added later, the store is not served (its units of work are refused),
// the error naming the tenant is logged, and it is tried again each poll
// interval until it succeeds.
func TestFailingTenantMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.SQLite)
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 2)
	bus, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(t, err)

	m := newMigrations("failing")
	m.setFail("t1", true)
	o, err := fxoutbox.New(main.DB, bus, fxoutbox.Config{
		Dialect: main.Dialect, TenantStores: fxoutbox.StaticTenantStores(storesOf(tenants)...),
		TenantMigrations: []fxoutbox.TenantMigration{m.migrate},
	}, nil)
	require.NoError(t, err)
	err = o.Start(ctx)
	require.ErrorContains(t, err, `fxoutbox: Start: fxoutbox: tenant "t1": no room`)

	clock := newFakeClock()
	core, logs := observer.New(zap.WarnLevel)
	src := &outboxtest.TenantSource{}
	src.Set(tenants[0].store)
	o, err = fxoutbox.New(main.DB, bus, fxoutbox.Config{
		Dialect: main.Dialect, TenantStores: src, Now: clock.Now, After: clock.After,
		Relay:            fxoutbox.RelayConfig{PollInterval: time.Second, RetryInitial: time.Second, RetryMax: time.Second},
		TenantMigrations: []fxoutbox.TenantMigration{m.migrate},
	}, zap.New(core))
	require.NoError(t, err)
	require.NoError(t, o.Start(ctx))
	t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })
	tries := func() int { return len(slices.DeleteFunc(m.ids(), func(id string) bool { return id != "t1" })) }
	before := tries()
	src.Set(tenants[0].store, tenants[1].store)
	require.Eventually(t, func() bool {
		if tries() >= before+2 {
			return true
		}
		clock.Advance(time.Second)
		return false
	}, time.Minute, 5*time.Millisecond, "tried again at a later poll")
	assert.Equal(t, []string{"", "t0"}, o.Tenants(), "not served")
	ran := false
	require.ErrorIs(t, o.InTenant(ctx, "t1", func(context.Context) error { ran = true; return nil }), fxbus.ErrUnknownTenant)
	assert.False(t, ran)
	logged := false
	for _, e := range logs.All() {
		if err, ok := e.ContextMap()["error"].(string); ok && e.Level == zap.WarnLevel {
			logged = logged || (strings.Contains(err, `tenant "t1"`) && strings.Contains(err, "no room"))
		}
	}
	assert.True(t, logged, "the error, naming the tenant, is logged")

	m.setFail("t1", false)
	require.Eventually(t, func() bool {
		if slices.Contains(o.Tenants(), "t1") {
			return true
		}
		clock.Advance(time.Second)
		return false
	}, time.Minute, 5*time.Millisecond, "served once its migration succeeds")
	require.NoError(t, o.InTenant(ctx, "t1", func(context.Context) error { return nil }))
	assert.Zero(t, count(t, tenants[1].db, "SELECT COUNT(*) FROM beside_failing"))
}

// Stores that appear together while the relay runs are migrated at most
// two at a time: their migration lock is one per database, so more would
// each hold a connection and a place of the budget while they queued for
// it (found in review: a burst of new tenants starved the relay and every
// unit of work). Two, so that one that hangs holds no other back.
func TestNewTenantsMigrateTwoAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.SQLite)
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 4)
	for _, tn := range tenants { // at their version: each comes to its TenantMigration at once
		require.NoError(t, fxoutbox.Migrate(ctx, tn.db, fxoutbox.SQLite, fxoutbox.Tables{}))
	}
	bus, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(t, err)
	var (
		mu            sync.Mutex
		running, most int
	)
	release := make(chan struct{})
	blocking := func(ctx context.Context, _ fxoutbox.TenantStore) error {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		defer func() {
			mu.Lock()
			running--
			mu.Unlock()
		}()
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	clock := newFakeClock()
	src := &outboxtest.TenantSource{}
	o, err := fxoutbox.New(main.DB, bus, fxoutbox.Config{
		Dialect: main.Dialect, TenantStores: src, Now: clock.Now, After: clock.After,
		Relay:            fxoutbox.RelayConfig{PollInterval: time.Second, RetryInitial: time.Second, RetryMax: time.Second},
		TenantMigrations: []fxoutbox.TenantMigration{blocking},
	}, nil)
	require.NoError(t, err)
	require.NoError(t, o.Start(ctx))
	t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })

	src.Set(storesOf(tenants)...)
	now := func() int {
		mu.Lock()
		defer mu.Unlock()
		return running
	}
	require.Eventually(t, func() bool {
		if now() == 2 {
			return true
		}
		clock.Advance(time.Second)
		return false
	}, time.Minute, 5*time.Millisecond, "two migrations under way")
	for served := 0; served < 4; {
		release <- struct{}{} // one ends; another may begin
		served++
		require.Eventually(t, func() bool {
			if len(o.Tenants()) == 1+served && now() == min(2, 4-served) {
				return true
			}
			clock.Advance(time.Second)
			return false
		}, time.Minute, 5*time.Millisecond, "%d served", served)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 2, most, "at most two migrations at once")
}
