package fxbus_test

import (
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// With fair shares by tenant, a tenant with 50 messages waiting and
// another with one: the other's is handled within one round of the turn
// (after at most one more of the noisy tenant's than the one already
// running), counted in places, not timed. Without them, it waits behind
// nearly all 50.
func TestFairSharesGiveEachTenantATurn(t *testing.T) {
	t.Parallel()
	const noisy = 50
	place := func(t *testing.T, opts ...fxbus.SubscribeOption) int {
		broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
		t.Cleanup(func() { _ = broker.Close() })
		tp := topic(t, "fair")
		got := newTickLog()
		got.gate, got.entry = make(chan struct{}), make(chan struct{}, noisy+1)
		bus := consumer(t, fxbus.Config{Publisher: broker, Subscriber: broker, Tenants: fxbus.StaticTenants("noisy", "quiet")}, tp, got,
			append([]fxbus.SubscribeOption{fxbus.InFlight(1), fxbus.Lookahead(100)}, opts...)...)
		for i := range noisy {
			publishTick(t, broker, tp, "n", "noisy", i)
		}
		publishTick(t, broker, tp, "q", "quiet", 0)
		<-got.entry // the first of the noisy tenant's holds the one slot
		require.Eventually(t, func() bool { return bus.Stats().InFlight == noisy+1 }, time.Minute, time.Millisecond,
			"every message held, waiting for the slot")
		for range noisy + 1 {
			got.gate <- struct{}{}
		}
		got.waitFor(t, "every message", func(ts []Tick) bool { return len(ts) == noisy+1 })
		for i, e := range got.all() {
			if e.Key == "q" {
				return i + 1
			}
		}
		t.Fatal("the quiet tenant's message was not handled")
		return 0
	}
	t.Run("fair", func(t *testing.T) {
		t.Parallel()
		at := place(t, fxbus.FairShares(fxbus.PerTenant))
		assert.LessOrEqual(t, at, 3, "the quiet tenant's message, after the one running and at most one more")
	})
	t.Run("in arrival order", func(t *testing.T) {
		t.Parallel()
		// One budget for every message (PerType), so that one queue
		// holds them in their arrival order: a budget per tenant would
		// let each tenant's queue ask on a goroutine of its own, and the
		// scheduler would choose the order.
		at := place(t, fxbus.RateLimit(fxbus.Limit{Per: fxbus.PerType, Rate: 1_000_000, Burst: 1_000_000}))
		// The in-process broker hands messages over on goroutines of
		// their own: the arrival order is the publish order, nearly.
		assert.Greater(t, at, noisy-10, "without fair shares, behind nearly all of the noisy tenant's")
	})
}
