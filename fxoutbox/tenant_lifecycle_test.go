package fxoutbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// orderOf is the OrderPlaced msg carries.
func orderOf(t *testing.T, msg *message.Message) int {
	t.Helper()
	var e OrderPlaced
	require.NoError(t, json.Unmarshal(msg.Payload, &e))
	return e.ID
}

// A tenant added to the source while the outbox runs is served once the
// outbox's clock has moved one poll interval: its store is migrated, a
// command for it commits there and its event is relayed. A tenant
// removed while rows wait in its store is refused new work at once, and
// its rows are still relayed: nothing is lost, nothing deleted but what
// was sent.
func TestTenantStoresComeAndGo(t *testing.T) {
	t.Parallel()
	r, clock, src, a, b := comingAndGoing(t)
	ctx := context.Background()
	inB := fxbus.WithTenant(ctx, b.store.ID)
	require.ErrorIs(t, fxcqrs.Exec(inB, r.m, PlaceOrder{ID: 1}), fxbus.ErrUnknownTenant)

	// Added: served after one poll interval of the outbox's clock, its
	// migration (beside the relay) waking the relay when it is done.
	src.Set(a.store, b.store)
	servedWithinAPoll(t, r.outbox, clock, 3)
	assert.Equal(t, []string{"", a.store.ID, b.store.ID}, r.outbox.Tenants())
	require.NoError(t, fxcqrs.Exec(inB, r.m, PlaceOrder{ID: 2}))
	msg := next(t, r.orders)
	assert.Equal(t, 2, orderOf(t, msg))
	assert.Equal(t, b.store.ID, msg.Metadata.Get(fxbus.MetadataTenant))
	assert.Equal(t, 1, count(t, b.db, "SELECT COUNT(*) FROM orders"))

	// Removed with a row waiting (the broker refuses for now): refused
	// new work, its row kept, then relayed.
	r.gate.open.Store(false)
	require.NoError(t, fxcqrs.Exec(inB, r.m, PlaceOrder{ID: 3}))
	src.Set(a.store)
	require.Eventually(t, func() bool {
		clock.Advance(time.Second) // the relay's retries, and its poll, on its clock
		return len(r.outbox.Tenants()) == 2
	}, time.Minute, time.Millisecond)
	require.ErrorIs(t, fxcqrs.Exec(inB, r.m, PlaceOrder{ID: 4}), fxbus.ErrUnknownTenant)
	assert.Equal(t, 1, count(t, b.db, "SELECT COUNT(*) FROM fxcqrs_outbox"), "the removed tenant's row is kept")
	r.gate.open.Store(true)
	got := make(chan *message.Message, 1)
	go func() { got <- <-r.orders }()
	require.Eventually(t, func() bool {
		select {
		case msg = <-got:
			return true
		default:
			clock.Advance(time.Second)
			return false
		}
	}, time.Minute, time.Millisecond)
	assert.Equal(t, 3, orderOf(t, msg))
	assert.Equal(t, b.store.ID, msg.Metadata.Get(fxbus.MetadataTenant))
	adm, err := r.outbox.AdminOf(b.store.ID) // still there, for repairs
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		clock.Advance(time.Second)
		backlog, err := adm.Backlog(ctx)
		return err == nil && len(backlog) == 0
	}, time.Minute, time.Millisecond)
	assert.Equal(t, 2, count(t, b.db, "SELECT COUNT(*) FROM orders"), "nothing of the removed tenant is deleted")

	// The other tenant is served as before.
	require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, a.store.ID), r.m, PlaceOrder{ID: 5}))
	assert.Equal(t, 5, orderOf(t, next(t, r.orders)))
}

// One tenant's backlog does not hold the others back: with a thousand
// rows waiting in one tenant's store, another tenant's single row is
// published in the relay's first pass, after at most one store turn's
// bound of the busy tenant's rows (batchesPerTurn batches). Counted in
// passes and rows, not in time.
func TestTenantStoresShareTheRelay(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.SQLite)
	ordersTable(t, main.DB, "")
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 2)
	busy, quiet := tenants[0], tenants[1]
	src := fxoutbox.StaticTenantStores(busy.store, quiet.store)
	require.NoError(t, fxoutbox.MigrateAll(context.Background(), main.DB, src, fxoutbox.SQLite, fxoutbox.Tables{}, nil))
	insert := "INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata, created_ns) VALUES (?, 0, ?, ?, '{}', 0)"
	tx, err := busy.db.Begin()
	require.NoError(t, err)
	for i := range 1000 {
		_, err := tx.Exec(insert, "busy", fmt.Sprintf("busy-%d", i), "{}")
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	_, err = quiet.db.Exec(insert, "orders", "quiet-1", `{"ID":1}`)
	require.NoError(t, err)

	var (
		busySent   atomic.Int64
		atQuiet    atomic.Int64 // busy's rows published before quiet's
		passesThen atomic.Int64
		o          atomic.Pointer[fxoutbox.Outbox]
	)
	atQuiet.Store(-1)
	r := newTenantStoresRig(t, main, src, fxoutbox.Config{Relay: fxoutbox.RelayConfig{BatchSize: 10}}, true)
	o.Store(r.outbox)
	r.gate.hook.Store(func(topic string, msgs []*message.Message) {
		if topic == "busy" {
			busySent.Add(int64(len(msgs)))
		} else if atQuiet.Load() < 0 {
			atQuiet.Store(busySent.Load())
			passesThen.Store(int64(fxoutbox.RelayPasses(o.Load())))
		}
	})
	// The relay passed, failing, while the gate was closed: count the
	// passes from its opening.
	opened := int64(fxoutbox.RelayPasses(r.outbox))
	r.gate.open.Store(true)
	require.Eventually(t, func() bool { return atQuiet.Load() >= 0 }, time.Minute, time.Millisecond)
	assert.LessOrEqual(t, passesThen.Load()-opened, int64(1), "the quiet tenant's row waited more than a pass")
	assert.LessOrEqual(t, atQuiet.Load(), int64(16*10+10), "the busy tenant held its turn past the bound")
	require.Eventually(t, func() bool { return busySent.Load() == 1000 }, time.Minute, time.Millisecond)
}

// With the connection budget spent, a command waits on its context and
// gets its error, and nothing begins; with a place free again it runs.
func TestTenantStoresConnectionBudget(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.SQLite)
	ordersTable(t, main.DB, "")
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 1)
	src := fxoutbox.StaticTenantStores(tenants[0].store)
	r := newTenantStoresRig(t, main, src, fxoutbox.Config{MaxConnections: 1}, false)
	ctx := context.Background()
	in := fxbus.WithTenant(ctx, tenants[0].store.ID)
	hold, holding := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- r.outbox.InTenant(ctx, "", func(context.Context) error {
			close(holding)
			<-hold
			return nil
		})
	}()
	<-holding
	waitCtx, cancel := context.WithTimeout(in, 50*time.Millisecond)
	defer cancel()
	err := fxcqrs.Exec(waitCtx, r.m, PlaceOrder{ID: 1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "Config.MaxConnections")
	assert.Zero(t, r.handled.Load(), "nothing began")
	close(hold)
	require.NoError(t, <-done)
	require.NoError(t, fxcqrs.Exec(in, r.m, PlaceOrder{ID: 2}))
	assert.Equal(t, 2, orderOf(t, next(t, r.orders)))
	assert.Equal(t, 1, count(t, tenants[0].db, "SELECT COUNT(*) FROM orders"))
}

// MigrateAll migrates every store in turn, telling its progress, and
// stops at the first that fails, with an error naming its tenant.
func TestMigrateAll(t *testing.T) {
	t.Parallel()
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 3)
	closed := outboxtest.OpenEmpty(t, fxoutbox.SQLite).DB
	require.NoError(t, closed.Close())
	var seen []string
	progress := func(tenant string, done, total int) {
		seen = append(seen, fmt.Sprintf("%s %d/%d", tenant, done, total))
	}
	stores := storesOf(tenants)
	broken := append(append([]fxoutbox.TenantStore{}, stores[0]), fxoutbox.TenantStore{ID: "broken", DB: closed}, stores[1])
	err := fxoutbox.MigrateAll(context.Background(), nil, fxoutbox.StaticTenantStores(broken...), fxoutbox.SQLite, fxoutbox.Tables{}, progress)
	require.ErrorContains(t, err, `tenant "broken" (2 of 3)`)
	assert.Equal(t, []string{"t0 1/3"}, seen)
	assert.Error(t, fxoutbox.CheckSchema(context.Background(), tenants[1].db, fxoutbox.SQLite, fxoutbox.Tables{}), "the stores after the failure are not migrated")

	seen = nil
	require.NoError(t, fxoutbox.MigrateAll(context.Background(), nil, fxoutbox.StaticTenantStores(stores...), fxoutbox.SQLite, fxoutbox.Tables{}, progress))
	assert.Equal(t, []string{"t0 1/3", "t1 2/3", "t2 3/3"}, seen)
	for _, ts := range tenants {
		require.NoError(t, fxoutbox.CheckSchema(context.Background(), ts.db, fxoutbox.SQLite, fxoutbox.Tables{}))
	}
}

// In the shared mode every tenant works in the outbox's database:
// InTenant runs there with the tenant on its context, and AdminOf gives
// only the default tenant's Admin, since no Admin there holds one
// tenant's rows alone.
func TestSharedModeTenants(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	r := newRig(t, d, fxoutbox.Config{})
	assert.Equal(t, []string{""}, r.outbox.Tenants())
	var seen string
	require.NoError(t, r.outbox.InTenant(context.Background(), "acme", func(ctx context.Context) error {
		seen = fxbus.TenantOf(ctx)
		_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "CREATE TABLE shared_mode (id INTEGER)")
		return err
	}))
	assert.Equal(t, "acme", seen)
	assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM shared_mode"))
	_, err := r.outbox.AdminOf("acme")
	require.ErrorIs(t, err, fxbus.ErrUnknownTenant)
	adm, err := r.outbox.AdminOf("")
	require.NoError(t, err)
	assert.Same(t, r.outbox.Admin(), adm)
}

// A tenant's store that fails (its outbox table is gone) waits for a
// backoff of its own: the relay does not back off for it, and another
// tenant's commit is sent at once, with the outbox's clock standing
// still.
func TestTenantStoreFailureStaysItsOwn(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	main := openDatabase(t, fxoutbox.SQLite)
	ordersTable(t, main.DB, "")
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 2)
	broken, quiet := tenants[0], tenants[1]
	src := fxoutbox.StaticTenantStores(broken.store, quiet.store)
	require.NoError(t, fxoutbox.MigrateAll(context.Background(), nil, src, fxoutbox.SQLite, fxoutbox.Tables{}, nil))
	_, err := broken.db.Exec("DROP TABLE fxcqrs_outbox")
	require.NoError(t, err)
	r := newTenantStoresRig(t, main, src, fxoutbox.Config{
		Now: clock.Now, After: clock.After,
		Relay: fxoutbox.RelayConfig{PollInterval: time.Minute, RetryInitial: time.Minute, RetryMax: time.Minute},
	}, false)
	require.Eventually(t, func() bool { return fxoutbox.RelayPasses(r.outbox) >= 1 }, time.Minute, time.Millisecond)
	require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(context.Background(), quiet.store.ID), r.m, PlaceOrder{ID: 7}))
	assert.Equal(t, 7, orderOf(t, next(t, r.orders)))
}

// A tenant's SQLite pool must have one writer, as the outbox's own: Start
// refuses one that may open more connections, naming the tenant.
func TestTenantStoreSQLiteSingleWriter(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.SQLite)
	tenant := outboxtest.OpenEmpty(t, fxoutbox.SQLite)
	tenant.DB.SetMaxOpenConns(4)
	bus, err := fxbus.New(fxbus.Config{Publisher: publisherNop{}}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(main.DB, bus, fxoutbox.Config{
		Dialect:      fxoutbox.SQLite,
		TenantStores: fxoutbox.StaticTenantStores(fxoutbox.TenantStore{ID: "acme", DB: tenant.DB}),
	}, nil)
	require.NoError(t, err)
	err = o.Start(context.Background())
	require.ErrorContains(t, err, `tenant "acme"`)
	require.ErrorContains(t, err, "SetMaxOpenConns(1)")
	require.NoError(t, o.Stop(context.Background()))
}

type publisherNop struct{}

func (publisherNop) Publish(string, ...*message.Message) error { return nil }
func (publisherNop) Close() error                              { return nil }

// A call for another tenant made inside a tenant's unit of work (a
// handler sending a command under another tenant's context) is refused:
// its writes would commit in the first tenant's store.
func TestNestedCallForAnotherTenantIsRefused(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.SQLite)
	ordersTable(t, main.DB, "")
	tenants := tenantDatabases(t, fxoutbox.SQLite, "n", 2)
	r := newTenantStoresRig(t, main, fxoutbox.StaticTenantStores(storesOf(tenants)...), fxoutbox.Config{}, false)
	a, b := tenants[0].store.ID, tenants[1].store.ID
	err := r.outbox.InTenant(context.Background(), a, func(ctx context.Context) error {
		return fxcqrs.Exec(fxbus.WithTenant(ctx, b), r.m, PlaceOrder{ID: 1})
	})
	require.ErrorContains(t, err, "inside a unit of work of tenant")
	assert.Zero(t, r.handled.Load(), "the handler never ran")
	require.NoError(t, r.outbox.InTenant(context.Background(), a, func(ctx context.Context) error {
		return fxcqrs.Exec(ctx, r.m, PlaceOrder{ID: 2}) // the same tenant's: joins
	}))
	assert.Equal(t, 2, orderOf(t, next(t, r.orders)))
	for i, ts := range tenants {
		assert.Equal(t, 1-i, count(t, ts.db, "SELECT COUNT(*) FROM orders"), "tenant %s's orders", ts.store.ID)
		assert.Equal(t, 0, count(t, ts.db, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE msg_tenant = '"+b+"'"), "no row of %s in %s's store", b, ts.store.ID)
	}
}

// A panic inside a unit of work (InTenant's function, a handler) rolls its
// transaction back and gives its place in the connection budget back: the
// next unit of work begins.
func TestPanicInAUnitOfWorkGivesItsPlaceBack(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.SQLite)
	ordersTable(t, main.DB, "")
	tenants := tenantDatabases(t, fxoutbox.SQLite, "p", 1)
	r := newTenantStoresRig(t, main, fxoutbox.StaticTenantStores(storesOf(tenants)...), fxoutbox.Config{MaxConnections: 1}, false)
	for _, tenant := range []string{"", tenants[0].store.ID} {
		assert.Panics(t, func() {
			_ = r.outbox.InTenant(context.Background(), tenant, func(context.Context) error { panic("boom") })
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, r.outbox.InTenant(ctx, tenant, func(context.Context) error { return nil }), "tenant %q: the place was given back", tenant)
		cancel()
	}
}

// A store that appears while the relay runs is migrated beside it, off
// its goroutine: a migration that hangs (a TenantMigration that waits,
// as one waiting on a lock held elsewhere) holds neither the other
// tenants' delivery nor the service of another store that appeared with
// it, and its tenant is refused until it is done; its end wakes the
// relay, which serves it without waiting for the next poll. One that
// runs past its timeout is cancelled and tried again at a later read of
// the source; Stop cancels those in hand and waits for them.
func TestTenantStoreMigratedBesideTheRelay(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	main := openDatabase(t, fxoutbox.SQLite)
	ordersTable(t, main.DB, "")
	tenants := tenantDatabases(t, fxoutbox.SQLite, "m", 4)
	a, slow, b, stuck := tenants[0], tenants[1], tenants[2], tenants[3]
	release := make(chan struct{})
	var stuckRuns, stuckEnded atomic.Int32
	migration := func(ctx context.Context, ts fxoutbox.TenantStore) error {
		switch ts.ID {
		case slow.store.ID:
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		case stuck.store.ID:
			stuckRuns.Add(1)
			defer stuckEnded.Add(1)
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	src := &outboxtest.TenantSource{}
	src.Set(a.store)
	r := newTenantStoresRig(t, main, src, fxoutbox.Config{
		Now: clock.Now, After: clock.After, TenantMigrations: []fxoutbox.TenantMigration{migration},
		Relay: fxoutbox.RelayConfig{PollInterval: time.Second, RetryInitial: time.Second, RetryMax: time.Second, Lease: 24 * time.Hour},
	}, false)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the rig's Stop, should the relay wait on it
	ctx := context.Background()
	served := func(id string) bool { return slices.Contains(r.outbox.Tenants(), id) }
	// readUntil moves the outbox's clock a poll interval at a time, for
	// the relay to read the source, until cond holds.
	readUntil := func(cond func() bool, msg string) {
		t.Helper()
		// Bounded: a relay stuck in a migration never gets there.
		require.Eventually(t, func() bool {
			clock.Advance(time.Second)
			return cond()
		}, 20*time.Second, time.Millisecond, msg)
	}

	src.Set(a.store, slow.store, b.store)
	readUntil(func() bool { return served(b.store.ID) }, "a store that appeared waited for another's migration")
	assert.False(t, served(slow.store.ID), "served before its migration ended")
	require.ErrorIs(t, fxcqrs.Exec(fxbus.WithTenant(ctx, slow.store.ID), r.m, PlaceOrder{ID: 1}), fxbus.ErrUnknownTenant)
	for i, ts := range []tenantStore{a, b} {
		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, PlaceOrder{ID: 10 + i}))
		assert.Equal(t, 10+i, orderOf(t, next(t, r.orders)), "delivered while a migration hangs")
	}
	unblock() // the clock stands still: its end wakes the relay
	require.Eventually(t, func() bool { return served(slow.store.ID) }, time.Minute, time.Millisecond)
	require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, slow.store.ID), r.m, PlaceOrder{ID: 2}))
	assert.Equal(t, 2, orderOf(t, next(t, r.orders)))

	// Past its timeout: cancelled, not served, tried again later (the
	// timeout leaves the outbox's own migration of it time to end).
	fxoutbox.SetTenantMigrationTimeout(r.outbox, 500*time.Millisecond)
	src.Set(a.store, slow.store, b.store, stuck.store)
	readUntil(func() bool { return stuckEnded.Load() >= 2 }, "a migration past its timeout was not tried again")
	assert.False(t, served(stuck.store.ID))

	// Stop cancels the migration in hand and waits for it.
	fxoutbox.SetTenantMigrationTimeout(r.outbox, time.Hour)
	runs := stuckRuns.Load()
	readUntil(func() bool { return stuckRuns.Load() > runs }, "the migration was not tried again")
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, r.outbox.Stop(stopCtx))
	assert.Equal(t, stuckRuns.Load(), stuckEnded.Load(), "a migration still runs after Stop")
}

// servedWithinAPoll moves clock one poll interval (a second) on, and
// again only when a pass ended without reading the tenant source since
// the move (one that was running as the clock moved waits a poll
// interval from its end; a store's migration beside the relay wakes
// passes of its own), until o serves n tenants, the default included;
// and asserts it took no more than two moves: an added tenant is served
// within one poll interval of the pass in hand.
func servedWithinAPoll(t *testing.T, o *fxoutbox.Outbox, clock *fakeClock, n int) {
	t.Helper()
	moves, passes, reads := 1, fxoutbox.RelayPasses(o), fxoutbox.TenantSourceReads(o)
	clock.Advance(time.Second)
	require.Eventually(t, func() bool {
		if len(o.Tenants()) == n {
			return true
		}
		if now := fxoutbox.RelayPasses(o); now > passes && fxoutbox.TenantSourceReads(o) == reads {
			moves, passes = moves+1, now
			clock.Advance(time.Second)
		}
		return false
	}, time.Minute, time.Millisecond)
	assert.LessOrEqual(t, moves, 2, "the added tenant waited more than a poll interval after the pass in hand")
}

// comingAndGoing is the rig of the tests of tenants that come and go: an
// outbox on SQLite, on a fake clock whose poll interval is a second, with
// two tenants' databases a and b, the source listing a alone.
func comingAndGoing(t *testing.T) (r *tenantStoresRig, clock *fakeClock, src *outboxtest.TenantSource, a, b tenantStore) {
	t.Helper()
	clock = newFakeClock()
	main := openDatabase(t, fxoutbox.SQLite)
	ordersTable(t, main.DB, "")
	tenants := tenantDatabases(t, fxoutbox.SQLite, "t", 2)
	a, b = tenants[0], tenants[1]
	src = outboxtest.NewTenantSource(a.store)
	r = newTenantStoresRig(t, main, src, fxoutbox.Config{
		Now: clock.Now, After: clock.After,
		Relay: fxoutbox.RelayConfig{
			PollInterval: time.Second, RetryInitial: time.Second, RetryMax: time.Second,
			Lease:            24 * time.Hour, // the test moves the clock on while the relay sends
			ProgressInterval: -1,             // each batch deleted as it is published: the rows counted are those waiting
		},
	}, false)
	return r, clock, src, a, b
}
