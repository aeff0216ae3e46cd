package fxoutbox_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ShipOrder is a command whose handler emits the durable Shipped.
type ShipOrder struct{ ID int }

// A tenant's store that hangs in the middle of a batch of the delivery
// topic (this service's durable events, delivered to its own mediator):
// as the hung tenant's handler first runs, another connection locks its
// outbox row (SELECT ... FOR UPDATE in an open transaction), which lets
// the reads and the handler's inbox transaction through but holds the
// relay's fenced delete of the row delivered. The delete fails at
// RelayConfig.StoreTimeout and ends the store's turn: the other tenants'
// events, committed meanwhile, are handled while the lock is held. Once
// it is released the row is delivered again and deleted, and the inbox
// keeps each handler's effect once. Without the delete's deadline the
// relay waits on the lock with every tenant's delivery.
func TestTenantStoreThatHangsMidDeliveryStaysItsOwn(t *testing.T) {
	t.Parallel()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	ordersTable(t, main.DB, "")
	tenants := tenantSchemas(t, main, "d", 2)
	hung := tenants[1]
	all := append([]tenantStore{{db: main.DB}}, tenants...) // the default tenant first
	for _, ts := range all {
		_, err := main.DB.Exec("CREATE TABLE " + ts.table("shipped") + " (id INTEGER NOT NULL, tenant VARCHAR(64) NOT NULL)")
		require.NoError(t, err)
	}
	ctx := context.Background()

	var (
		deliveries sync.Map // tenant -> *atomic.Int32: every delivery, before the inbox decides
		lock       = newRowLock(main.DB, hung)
	)
	delivered := func(tenant string) *atomic.Int32 {
		n, _ := deliveries.LoadOrStore(tenant, new(atomic.Int32))
		return n.(*atomic.Int32)
	}
	counted := fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, _ fxcqrs.Call, next fxcqrs.Next) (any, error) {
		delivered(fxbus.TenantOf(ctx)).Add(1)
		return next(ctx)
	}), fxcqrs.KindEvent)
	ship := commandFunc[ShipOrder](func(ctx context.Context, c ShipOrder) error {
		fxcqrs.Emit(ctx, Shipped(c))
		return nil
	})
	shipped := eventFunc[Shipped](func(ctx context.Context, e Shipped) error {
		if fxbus.TenantOf(ctx) == hung.store.ID {
			// Its row is read and being delivered: the relay's delete
			// of it, after this, is what waits.
			lock.take()
		}
		_, err := fxoutbox.Tx(ctx).ExecContext(ctx, main.Dialect.Rebind("INSERT INTO shipped (id, tenant) VALUES (?, ?)"), e.ID, fxbus.TenantOf(ctx))
		return err
	})
	r := newTenantStoresRig(t, main, fxoutbox.StaticTenantStores(storesOf(tenants)...), fxoutbox.Config{
		Relay:        fxoutbox.RelayConfig{StoreTimeout: 300 * time.Millisecond},
		Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Shipped]()},
	}, false, fxcqrs.WithMiddleware(counted), fxcqrs.WithCommandHandlers(ship), fxcqrs.WithEventHandlers(shipped))
	t.Cleanup(func() { lock.release(t) }) // before the rig's Stop: a relay stuck on the lock would hold it

	// 100 + its place in all.
	require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, hung.store.ID), r.m, ShipOrder{ID: 102}))
	lock.awaitDeleteWaiting(t, "the hung tenant's event was not delivered")

	// Committed while the relay's delete waits on the lock: the others'
	// events are handled all the same.
	for i, ts := range all {
		if ts.store.ID != hung.store.ID {
			require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, ShipOrder{ID: 100 + i}))
		}
	}
	effect := func(i int, ts tenantStore) string {
		return fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE id = %d AND tenant = '%s'", ts.table("shipped"), 100+i, ts.store.ID)
	}
	// Generous: a hung step ends at 300ms; the relay that waited on the
	// delete never got here while the lock was held.
	require.Eventually(t, func() bool {
		for i, ts := range all {
			if ts.store.ID != hung.store.ID && count(t, main.DB, effect(i, ts)) == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "the other tenants' events were not handled while one store hung mid-delivery")
	assert.Positive(t, count(t, main.DB, "SELECT COUNT(*) FROM "+hung.table("fxcqrs_outbox")), "the hung tenant's row is not deleted while locked")

	lock.release(t)
	r.emptied(t, all...)
	for i, ts := range all {
		assert.Equal(t, 1, count(t, main.DB, effect(i, ts)), "tenant %q: the handler's effect once", ts.store.ID)
		assert.Equal(t, 1, count(t, main.DB, "SELECT COUNT(*) FROM "+ts.table("fxcqrs_inbox")), "tenant %q: one inbox record", ts.store.ID)
	}
	t.Logf("the hung tenant's event was delivered %d times", delivered(hung.store.ID).Load())
}
