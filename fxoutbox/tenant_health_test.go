package fxoutbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// With tenant stores, the relay's readiness counts every store's lag: a
// row waiting in tenant s1's store past Config.MaxLag makes the outbox
// unready, the error naming s1, while the default store is empty; tenant
// s0's store that cannot be read is not what fails it (see readyLag);
// once s1's row is sent, the outbox is ready again, s0's store still
// unreadable.
func TestTenantReadinessLag(t *testing.T) {
	t.Parallel()
	recorderLayouts(t, func(t *testing.T, main database, tenants []tenantStore) {
		ctx := context.Background()
		clock := newFakeClock()
		src := &outboxtest.TenantSource{}
		src.Set(storesOf(tenants)...)
		r := newTenantStoresRig(t, main, src, fxoutbox.Config{Now: clock.Now}, true)
		health := fxcqrs.NewHealth(r.outbox.Checks()...)
		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, "s1"), r.m, PlaceOrder{ID: 1}))
		clock.Advance(30 * time.Second)
		require.NoError(t, health.Ready(ctx), "30s behind, within MaxLag")

		clock.Advance(time.Minute)
		err := health.Ready(ctx)
		require.Error(t, err, "90s behind in s1's store")
		assert.Contains(t, err.Error(), `behind in tenant "s1"'s store`)

		_, err = tenants[0].db.Exec("ALTER TABLE " + tenants[0].table("fxcqrs_outbox") + " RENAME TO fxcqrs_outbox_gone")
		require.NoError(t, err)
		err = health.Ready(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), `tenant "s1"`, "the worst lag, not the store that cannot be read")
		assert.NotContains(t, err.Error(), `"s0"`)

		r.gate.open.Store(true)
		waitFor(t, func() bool {
			clock.Advance(200 * time.Millisecond) // the relay's retry is due by the outbox's clock
			return health.Ready(ctx) == nil
		})
	})
}
