package fxoutbox_test

import (
	"context"
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
// on it waits, none fails) fails its turn at RelayConfig.StoreTimeout and
// waits for its own backoff: the other tenants' rows, committed before
// the lock and while the relay waits on it, are delivered while it is
// held. Once it is released the hung tenant's rows go out too, and
// every outbox is emptied: nothing is lost.
func TestTenantStoreThatHangsStaysItsOwn(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	ordersTable(t, main.DB, "")
	tenants := tenantSchemas(t, main, "h", 3)
	hung := tenants[1]
	r := newTenantStoresRig(t, main, fxoutbox.StaticTenantStores(storesOf(tenants)...), fxoutbox.Config{
		Relay: fxoutbox.RelayConfig{StoreTimeout: 300 * time.Millisecond},
	}, true)
	ctx := context.Background()
	all := append([]tenantStore{{db: main.DB}}, tenants...) // the default tenant first
	got := map[string][]int{}
	receive := func(msg *message.Message) {
		got[msg.Metadata.Get(fxbus.MetadataTenant)] = append(got[msg.Metadata.Get(fxbus.MetadataTenant)], orderOf(t, msg))
	}

	// Before the lock, the broker refusing: a row waits in every store.
	for i, ts := range all {
		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, PlaceOrder{ID: 100 + i}))
	}
	lock, err := main.DB.BeginTx(ctx, nil)
	require.NoError(t, err)
	released := false
	release := func() {
		if !released {
			released = true
			require.NoError(t, lock.Rollback())
		}
	}
	t.Cleanup(release) // before the rig's Stop: a relay stuck on the lock would hold it
	_, err = lock.ExecContext(ctx, "LOCK TABLE "+hung.table("fxcqrs_outbox")+" IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	r.gate.open.Store(true)

	// The relay's turn in the hung store waits on the lock.
	waiting := "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace" +
		" WHERE NOT l.granted AND n.nspname = '" + hung.in + "' AND c.relname = 'fxcqrs_outbox'"
	require.Eventually(t, func() bool { return count(t, main.DB, waiting) > 0 }, time.Minute, time.Millisecond)
	// Committed while it waits: the others' rows go out all the same.
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
	// Generous: a hung step ends at 300ms; the code before StoreTimeout never
	// got here while the lock was held.
	deadline := time.After(20 * time.Second)
	for !delivered() {
		select {
		case msg := <-r.orders:
			receive(msg)
		case <-deadline:
			t.Fatalf("the other tenants' rows were not delivered while one store hung: got %v", got)
		}
	}
	assert.Empty(t, got[hung.store.ID], "the hung store's row went out through the lock")

	release()
	for len(got[hung.store.ID]) < 1 {
		receive(next(t, r.orders))
	}
	for i, ts := range all {
		want := []int{100 + i, 200 + i}
		if ts.store.ID == hung.store.ID {
			want = want[:1]
		}
		assert.ElementsMatch(t, want, got[ts.store.ID], "tenant %q", ts.store.ID)
		adm, err := r.outbox.AdminOf(ts.store.ID)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			b, err := adm.Backlog(ctx)
			return err == nil && len(b) == 0
		}, time.Minute, 5*time.Millisecond, "tenant %q's outbox is not emptied", ts.store.ID)
	}
}
