package fxbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// Under fx, a supplied fxbus.Clock is the bus's clock: a route's
// deliver-by is stamped by it, and judged by it (a deliver-by a second
// after the fake now is in time, though the machine's clock is past it;
// one a nanosecond before is expired).
func TestModuleTakesAClock(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	clock.now = time.Now().Add(-time.Hour) // behind the machine's clock
	now := clock.Now()
	gc := goChannel(t)
	var bus *fxbus.Bus
	app := fxtest.New(t, fx.NopLogger,
		fxcqrs.Module, fxbus.Module,
		fx.Supply(fxbus.Clock(clock.Now)),
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)))),
		fxbus.Route[OrderPlaced](topic(t, "orders"), fxbus.DeliverWithin(time.Minute)),
		fx.Populate(&bus),
	)
	app.RequireStart()
	defer app.RequireStop()

	out, fails := bus.Messages(context.Background(), []any{OrderPlaced{ID: 1}})
	require.Empty(t, fails)
	require.Len(t, out, 1)
	assert.Equal(t, stamp(now.Add(time.Minute)), out[0].Message.Metadata.Get(fxbus.MetadataDeliverBy), "stamped by the clock given")

	inTime := message.NewMessage("a", nil)
	inTime.Metadata.Set(fxbus.MetadataDeliverBy, stamp(now.Add(time.Second)))
	assert.NoError(t, bus.CheckExpiry(inTime), "judged by the clock given, not the machine's")
	late := message.NewMessage("b", nil)
	late.Metadata.Set(fxbus.MetadataDeliverBy, stamp(now.Add(-time.Nanosecond)))
	assert.ErrorIs(t, bus.CheckExpiry(late), fxbus.ErrExpired)
}
