package fxoutbox_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A tenant's store that hangs (another connection holds an ACCESS
// EXCLUSIVE lock on its outbox in an open transaction: every statement
// on it waits, none fails) fails its turn at RelayConfig.StoreTimeout,
// when the relay lists its topics, and waits for its own backoff: the
// other tenants' rows, committed while the relay waits on it, are
// delivered while the lock is held. A command of the hung tenant's,
// committed meanwhile (its insert waits for the lock), is delivered once
// the lock is released, and every outbox is emptied: nothing is lost.
func TestTenantStoreThatHangsStaysItsOwn(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	ordersTable(t, main.DB, "")
	tenants := tenantSchemas(t, main, "h", 3)
	hung := tenants[1]
	r := newTenantStoresRig(t, main, fxoutbox.StaticTenantStores(storesOf(tenants)...), fxoutbox.Config{
		Relay: fxoutbox.RelayConfig{StoreTimeout: 300 * time.Millisecond},
	}, false)
	ctx := context.Background()
	all := append([]tenantStore{{db: main.DB}}, tenants...) // the default tenant first
	got := map[string][]int{}
	receive := func(msg *message.Message) {
		got[msg.Metadata.Get(fxbus.MetadataTenant)] = append(got[msg.Metadata.Get(fxbus.MetadataTenant)], orderOf(t, msg))
	}

	// Before the lock: every store served, its outbox emptied.
	for i, ts := range all {
		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, PlaceOrder{ID: 100 + i}))
		receive(next(t, r.orders))
	}
	r.emptied(t, hung)

	lock, err := main.DB.BeginTx(ctx, nil)
	require.NoError(t, err)
	var once sync.Once
	release := func() { once.Do(func() { require.NoError(t, lock.Rollback()) }) }
	t.Cleanup(release) // before the rig's Stop: a relay stuck on the lock would hold it
	_, err = lock.ExecContext(ctx, "LOCK TABLE "+hung.table("fxcqrs_outbox")+" IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)

	// The relay's listing of the hung store waits on the lock (it looks
	// at each store's table once per poll interval).
	waiting := "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace" +
		" WHERE NOT l.granted AND n.nspname = '" + hung.in + "' AND c.relname = 'fxcqrs_outbox'"
	require.Eventually(t, func() bool { return count(t, main.DB, waiting) > 0 }, time.Minute, time.Millisecond)
	// The hung tenant's command waits for the lock too.
	hungDone := make(chan error, 1)
	go func() { hungDone <- fxcqrs.Exec(fxbus.WithTenant(ctx, hung.store.ID), r.m, PlaceOrder{ID: 202}) }() // 200 + its place in all
	// Committed while the relay waits on the lock: the others' rows go
	// out all the same.
	for i, ts := range all {
		if ts.store.ID != hung.store.ID {
			require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, PlaceOrder{ID: 200 + i}))
		}
	}
	delivered := func() bool {
		for _, ts := range all {
			if ts.store.ID != hung.store.ID && len(got[ts.store.ID]) < 2 {
				return false
			}
		}
		return true
	}
	// Generous: a hung step ends at 300ms; the relay without
	// StoreTimeout never got here while the lock was held.
	r.receiveUntil(t, 20*time.Second, delivered, receive, "the other tenants' rows were not delivered while one store hung: got %v", got)
	assert.Len(t, got[hung.store.ID], 1, "only the hung tenant's row from before the lock")

	release()
	require.NoError(t, <-hungDone)
	for len(got[hung.store.ID]) < 2 {
		receive(next(t, r.orders))
	}
	for i, ts := range all {
		assert.ElementsMatch(t, []int{100 + i, 200 + i}, got[ts.store.ID], "tenant %q", ts.store.ID)
	}
	r.emptied(t, all...)
}

// rowLock is a hang in the middle of a batch: another transaction locks
// a tenant store's outbox rows FOR UPDATE, once, when take is first
// called (as the relay hands the tenant's row on), which lets the
// relay's reads through and holds its delete of the row.
type rowLock struct {
	db     *sql.DB
	store  tenantStore
	taken  sync.Once
	freed  sync.Once
	tx     *sql.Tx
	err    error
	locked chan struct{}
}

func newRowLock(db *sql.DB, store tenantStore) *rowLock {
	return &rowLock{db: db, store: store, locked: make(chan struct{})}
}

// take locks the store's outbox rows, the first time it is called.
func (l *rowLock) take() {
	l.taken.Do(func() {
		defer close(l.locked)
		if l.tx, l.err = l.db.BeginTx(context.Background(), nil); l.err == nil {
			_, l.err = l.tx.Exec("SELECT id FROM " + l.store.table("fxcqrs_outbox") + " FOR UPDATE")
		}
	})
}

// release ends the lock, if it was taken; again, it does nothing.
func (l *rowLock) release(t *testing.T) {
	l.freed.Do(func() {
		select {
		case <-l.locked:
			if l.tx != nil {
				require.NoError(t, l.tx.Rollback())
			}
		default: // never taken
		}
	})
}

// awaitDeleteWaiting waits until the lock is taken (what names the step
// that takes it) and the relay's delete of the store's outbox rows waits
// on it.
func (l *rowLock) awaitDeleteWaiting(t *testing.T, what string) {
	t.Helper()
	select {
	case <-l.locked:
		require.NoError(t, l.err)
	case <-time.After(time.Minute):
		t.Fatalf("%s: the lock was never taken", what)
	}
	waiting := "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM %" + l.store.in + "%fxcqrs_outbox%'"
	require.Eventually(t, func() bool { return count(t, l.db, waiting) > 0 }, 20*time.Second, time.Millisecond,
		"the relay's delete of the hung tenant's row does not wait on the lock")
}
