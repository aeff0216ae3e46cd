package fxoutbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A source with one wrong entry beside good ones still has its good ones
// served, a tenant added with it included, and none of those already
// served leaves: the relay dropped the whole list for the one error, so a
// tenant added then committed its commands and its rows were never sent
// (found in review).
func TestTenantBesideAWrongEntryIsServed(t *testing.T) {
	t.Parallel()
	r, clock, src, a, b := comingAndGoing(t)

	// b comes with an entry the outbox refuses (a schema on SQLite).
	wrong := fxoutbox.TenantStore{ID: "wrong", DB: a.store.DB, Schema: "s_wrong"}
	src.Set(a.store, b.store, wrong)
	require.Eventually(t, func() bool {
		if len(r.outbox.Tenants()) == 3 {
			return true
		}
		clock.Advance(time.Second)
		return false
	}, time.Minute, 5*time.Millisecond, "b served beside the wrong entry")
	assert.Equal(t, []string{"", a.store.ID, b.store.ID}, r.outbox.Tenants())

	ctx := context.Background()
	for i, tn := range []tenantStore{a, b} {
		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, tn.store.ID), r.m, PlaceOrder{ID: i + 1}))
	}
	got := map[string]int{}
	for range 2 {
		msg := next(t, r.orders)
		got[msg.Metadata.Get(fxbus.MetadataTenant)] = orderOf(t, msg)
	}
	assert.Equal(t, map[string]int{a.store.ID: 1, b.store.ID: 2}, got, "each tenant's order relayed, b's too")
}
