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

// A tenant's store that hangs in the middle of a batch, after the relay
// listed its lanes and read its rows: as the broker takes the hung
// tenant's row, another connection locks that row (SELECT ... FOR
// UPDATE in an open transaction), which lets every read through but
// holds the relay's delete. The delete fails at RelayConfig.StoreTimeout
// and ends the store's turn, as a listing that hangs does: the other
// tenants' rows, committed meanwhile, are delivered while the lock is
// held. The row published and not deleted stays the lane's progress:
// once the lock is released it is deleted, not sent again, and the
// tenant's next row follows it. Before, the relay waited on the delete
// with every tenant's delivery, until the lock was released.
//
// Both ways of deleting: at a full progress window (ProgressRows 1, the
// delete of a window right after the publish) and at once
// (ProgressInterval negative).
func TestTenantStoreThatHangsMidBatchStaysItsOwn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		relay fxoutbox.RelayConfig
	}{
		{"window", fxoutbox.RelayConfig{StoreTimeout: 300 * time.Millisecond, ProgressRows: 1}},
		{"at once", fxoutbox.RelayConfig{StoreTimeout: 300 * time.Millisecond, ProgressInterval: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hangMidBatch(t, tc.relay)
		})
	}
}

func hangMidBatch(t *testing.T, cfg fxoutbox.RelayConfig) {
	t.Helper()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	ordersTable(t, main.DB, "")
	tenants := tenantSchemas(t, main, "m", 3)
	hung := tenants[1]
	r := newTenantStoresRig(t, main, fxoutbox.StaticTenantStores(storesOf(tenants)...), fxoutbox.Config{Relay: cfg}, false)
	ctx := context.Background()
	all := append([]tenantStore{{db: main.DB}}, tenants...) // the default tenant first
	got := map[string][]int{}
	receive := func(msg *message.Message) {
		got[msg.Metadata.Get(fxbus.MetadataTenant)] = append(got[msg.Metadata.Get(fxbus.MetadataTenant)], orderOf(t, msg))
	}
	for i, ts := range all {
		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, PlaceOrder{ID: 100 + i}))
		receive(next(t, r.orders))
	}

	// As the broker takes the hung tenant's next row, its row is locked:
	// the relay has read it, and its delete is what waits.
	lock := newRowLock(main.DB, hung)
	r.gate.hook.Store(func(_ string, msgs []*message.Message) {
		for _, msg := range msgs {
			if msg.Metadata.Get(fxbus.MetadataTenant) == hung.store.ID {
				lock.take()
			}
		}
	})
	t.Cleanup(func() { lock.release(t) }) // before the rig's Stop: a relay stuck on the lock would hold it
	// 200 + its place in all.
	require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, hung.store.ID), r.m, PlaceOrder{ID: 202}))
	lock.awaitDeleteWaiting(t, "the hung tenant's row was not published")

	// Committed while the relay's delete waits on the lock: the others'
	// rows go out all the same.
	for i, ts := range all {
		if ts.store.ID != hung.store.ID {
			require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, PlaceOrder{ID: 200 + i}))
		}
	}
	delivered := func() bool {
		for _, ts := range all {
			if len(got[ts.store.ID]) < 2 {
				return false
			}
		}
		return true
	}
	// Generous: a hung step ends at 300ms; the relay that waited on the
	// delete never got here while the lock was held.
	r.receiveUntil(t, 10*time.Second, delivered, receive, "the other tenants' rows were not delivered while one store hung mid-batch: got %v", got)
	assert.Positive(t, count(t, main.DB, "SELECT COUNT(*) FROM "+hung.table("fxcqrs_outbox")), "the hung tenant's row is not deleted while locked")

	lock.release(t)
	r.emptied(t, all...)
	// A last row each: what was published before it has arrived, and a
	// row the relay sent again would be among it.
	for i, ts := range all {
		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, PlaceOrder{ID: 300 + i}))
	}
	last := func() bool {
		for i, ts := range all {
			if n := len(got[ts.store.ID]); n == 0 || got[ts.store.ID][n-1] != 300+i {
				return false
			}
		}
		return true
	}
	for !last() {
		receive(next(t, r.orders))
	}
	for i, ts := range all {
		assert.Equal(t, []int{100 + i, 200 + i, 300 + i}, got[ts.store.ID], "tenant %q: each row once, in order", ts.store.ID)
	}
}
