package fxbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quote is an event that says its own deliver-by (fxbus.Expiring).
type quote struct{ By time.Time }

func (q quote) DeliverBy() time.Time { return q.By }

// StampDeliverBy gives a message Encode made the deliver-by a route
// without DeliverWithin would: the earliest of the call's and the
// event's, a duration counted from the due time when one is given, and
// none when none is given.
func TestStampDeliverBy(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	now := clock.Now()
	bus, err := fxbus.New(fxbus.Config{Now: clock.Now}, nil, nil)
	require.NoError(t, err)
	stamped := func(ctx context.Context, ev any) string {
		msg, err := bus.Encode(ctx, ev)
		require.NoError(t, err)
		bus.StampDeliverBy(ctx, msg, ev)
		return msg.Metadata.Get(fxbus.MetadataDeliverBy)
	}
	ctx := context.Background()
	assert.Empty(t, stamped(ctx, quote{}), "none given")
	assert.Equal(t, stamp(now.Add(time.Hour)), stamped(ctx, quote{By: now.Add(time.Hour)}), "the event's own")
	assert.Equal(t, stamp(now.Add(time.Minute)), stamped(fxbus.WithDeliverWithin(ctx, time.Minute), quote{By: now.Add(time.Hour)}), "the earliest: the call's")
	assert.Equal(t, stamp(now.Add(2*time.Second)), stamped(fxbus.WithDeliverBy(ctx, now.Add(2*time.Second)), quote{}))
	due := fxbus.WithDueTime(fxbus.WithDeliverWithin(ctx, time.Minute), now.Add(24*time.Hour))
	assert.Equal(t, stamp(now.Add(24*time.Hour+time.Minute)), stamped(due, quote{}), "counted from the due time")
}
