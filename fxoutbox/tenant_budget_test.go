package fxoutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/internal/sqlspy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// busyCount counts the connections busy across pools (sqlspy's Busy):
// one that runs a statement, or holds a transaction open. While check is on, a
// connection that becomes busy when as many are busy as the budget has
// places taken is a statement that took no place: it is recorded.
type busyCount struct {
	check atomic.Bool
	taken atomic.Value // func() int: the budget's places taken

	mu      sync.Mutex
	busy    int
	max     int
	unowned []string // statements begun beyond the places taken (the first ten)
}

func (b *busyCount) enter(what string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy++
	if !b.check.Load() {
		return
	}
	b.max = max(b.max, b.busy)
	if taken := b.taken.Load().(func() int)(); b.busy > taken && len(b.unowned) < 10 {
		b.unowned = append(b.unowned, fmt.Sprintf("%d busy, %d places taken: %.80s", b.busy, taken, what))
	}
}

func (b *busyCount) leave() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy--
}

// countedPool opens dsn with the sqlite driver, one connection, counted
// by b.
func countedPool(t *testing.T, dsn string, b *busyCount) *sql.DB {
	t.Helper()
	plain, err := sql.Open("sqlite", dsn)
	require.NoError(t, err)
	drv := plain.Driver()
	require.NoError(t, plain.Close())
	db := sqlspy.Open(drv, dsn, sqlspy.Hooks{Busy: b.enter, Idle: b.leave})
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// With Config.MaxConnections, every connection the outbox uses holds a
// place of the budget: the relay's turns, the units of work, and the
// schedules' move, the inbox's clean-up and the migration of a store
// that appears, each store's. Counted under the driver, across the
// pools of the default store and four tenants' (SQLite files, a pool
// each): no connection is ever busy beyond the places taken, so never
// more than MaxConnections at once, while schedules fall due in every
// store, commands commit in each, the cleaners run and a tenant
// appears.
func TestTenantStoresBudgetCoversUpkeep(t *testing.T) {
	t.Parallel()
	const places = 2
	b := &busyCount{}
	b.taken.Store(func() int { return 0 })
	clock := newFakeClock()
	open := func() (*sql.DB, *sql.DB) { // counted, and plain for the test's own reads
		d := outboxtest.OpenEmpty(t, fxoutbox.SQLite)
		ordersTable(t, d.DB, "")
		return countedPool(t, d.DSN, b), d.DB
	}
	mainDB, mainPlain := open()
	require.NoError(t, fxoutbox.Migrate(context.Background(), mainPlain, fxoutbox.SQLite, fxoutbox.Tables{}))
	var stores []fxoutbox.TenantStore
	plain := map[string]*sql.DB{"": mainPlain}
	for i := range 4 {
		db, p := open()
		id := fmt.Sprintf("b%d", i)
		stores = append(stores, fxoutbox.TenantStore{ID: id, DB: db})
		plain[id] = p
	}
	src := &outboxtest.TenantSource{}
	src.Set(stores[:3]...)
	r := newTenantStoresRig(t, database{Dialect: fxoutbox.SQLite, DB: mainDB}, src, fxoutbox.Config{
		MaxConnections: places, Now: clock.Now, After: clock.After,
		Relay: fxoutbox.RelayConfig{PollInterval: time.Second, Lease: 24 * time.Hour},
	}, false)
	b.taken.Store(func() int { return fxoutbox.BudgetTaken(r.outbox) })
	b.check.Store(true)                        // from Start's end: its schema checks take no place
	t.Cleanup(func() { b.check.Store(false) }) // the relay's release of its leases at Stop takes none either

	ctx := context.Background()
	ids := append([]string{""}, idsOfStores(stores)...)
	for i, id := range ids[:4] {
		require.NoError(t, r.outbox.InTenant(ctx, id, func(ctx context.Context) error {
			_, err := fxoutbox.Schedule(ctx, clock.Now().Add(time.Minute), OrderPlaced{ID: 100 + i})
			return err
		}))
		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, id), r.m, PlaceOrder{ID: i}))
	}
	src.Set(stores...) // the fourth, migrated beside the relay
	got := map[int]bool{}
	require.Eventually(t, func() bool {
		clock.Advance(time.Minute) // the schedules fall due, the relay reads the source, the cleaners run
		for {
			select {
			case msg := <-r.orders:
				got[orderOf(t, msg)] = true
				continue
			default:
			}
			break
		}
		return len(got) == 8 && len(r.outbox.Tenants()) == 5
	}, time.Minute, 5*time.Millisecond)
	require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ids[4]), r.m, PlaceOrder{ID: 4}))
	assert.Equal(t, 4, orderOf(t, next(t, r.orders)))

	b.mu.Lock()
	defer b.mu.Unlock()
	assert.Empty(t, b.unowned, "statements that took no place of the budget")
	assert.LessOrEqual(t, b.max, places)
	assert.Positive(t, b.max)
	for id, db := range plain {
		assert.Zero(t, count(t, db, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"), "tenant %q's schedules", id)
	}
}

func idsOfStores(stores []fxoutbox.TenantStore) []string {
	out := make([]string, len(stores))
	for i, s := range stores {
		out[i] = s.ID
	}
	return out
}
