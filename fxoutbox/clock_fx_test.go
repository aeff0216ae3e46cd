package fxoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// Under fx the bus keeps the outbox's clock, given once in
// fxoutbox.Config.Now: a deliver-by is stamped by it (a routed message
// made at the fake now is worth a minute after it, not after the
// machine's now) and judged by it (a reminder due in an hour, sent a
// minute late by the fake clock, is handled, though by the machine's
// clock, days past the fake one, it expired long ago; one sent six
// minutes late is dead-lettered as expired).
func TestBusTakesTheOutboxClockUnderFx(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		clock := newFakeClock()
		start := clock.Now()
		topic := fmt.Sprintf("reminders_%d", rand.Uint32())
		gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64, Persistent: true}, watermill.NopLogger{})
		t.Cleanup(func() { _ = gc.Close() })
		handled := make(chan int, 4)
		var (
			m   *fxcqrs.Mediator
			bus *fxbus.Bus
		)
		app := fxtest.New(t, fx.NopLogger,
			fxcqrs.Module, fxbus.Module, fxoutbox.Module,
			fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Now: clock.Now, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond}}),
			fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
			fxbus.Route[Reminder](topic, fxbus.DeliverWithin(5*time.Minute)),
			fxbus.Subscribe[Reminder](topic),
			fxcqrs.AsCommandHandler(func() commandFunc[RemindIn] {
				return func(ctx context.Context, c RemindIn) error {
					_, err := fxoutbox.ScheduleAfter(ctx, c.Delay, Reminder{ID: c.ID})
					return err
				}
			}),
			fxcqrs.AsEventHandler(func() eventFunc[Reminder] {
				return func(_ context.Context, r Reminder) error {
					handled <- r.ID
					return nil
				}
			}),
			fx.Populate(&m, &bus),
		)
		dead := received(t, gc, topic+"_poison")
		app.RequireStart()
		defer app.RequireStop()

		out, fails := bus.Messages(context.Background(), []any{Reminder{ID: 9}})
		require.Empty(t, fails)
		require.Len(t, out, 1)
		assert.Equal(t, start.Add(5*time.Minute).Format("2006-01-02T15:04:05.000000000Z07:00"), out[0].Message.Metadata.Get(fxbus.MetadataDeliverBy),
			"stamped by the fake clock")

		require.NoError(t, fxcqrs.Exec(context.Background(), m, RemindIn{ID: 1, Delay: time.Hour}))
		require.NoError(t, fxcqrs.Exec(context.Background(), m, RemindIn{ID: 2, Delay: 30 * time.Minute}))

		clock.Advance(36 * time.Minute) // reminder 2 is due, six minutes late
		msg := next(t, dead)
		assert.JSONEq(t, `{"ID":2}`, string(msg.Payload))
		assert.Contains(t, msg.Metadata.Get(middleware.ReasonForPoisonedKey), "expired: ")

		clock.Advance(25 * time.Minute) // reminder 1 is due, a minute late by the fake clock: in time
		select {
		case id := <-handled:
			assert.Equal(t, 1, id, "judged by the fake clock: in time")
		case <-time.After(time.Minute):
			t.Fatal("the reminder in time by the fake clock was not handled: the bus judged it by another clock")
		}
		require.Eventually(t, func() bool { st := bus.Stats(); return st.Handled == 1 && st.Expired == 1 }, time.Minute, time.Millisecond)
	})
}
