package fxoutbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Reminder is a routed event worth five minutes after it is due.
type Reminder struct{ ID int }

// RemindIn schedules a Reminder after Delay.
type RemindIn struct {
	ID    int
	Delay time.Duration
}

// A scheduled message's deliver-by counts from its due time: one due in
// an hour, sent a minute after it, is handled, though it was scheduled
// far more than its five minutes before; one due in half an hour and sent
// six minutes late (the relay was behind, by the fake clock every part
// reads) is dead-lettered as expired, never handled.
func TestScheduledDeliverByCountsFromDueTime(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		clock := newFakeClock()
		start := clock.Now()
		gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64, Persistent: true}, watermill.NopLogger{})
		t.Cleanup(func() { _ = gc.Close() })
		bus, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc, Now: clock.Now},
			[]fxbus.Routing{fxbus.NewRoute[Reminder]("reminders", fxbus.DeliverWithin(5*time.Minute))},
			[]fxbus.Subscription{fxbus.NewSubscription[Reminder]("reminders")})
		require.NoError(t, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Now: clock.Now, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond}}, nil)
		require.NoError(t, err)
		handled := make(chan int, 4)
		m, err := fxcqrs.New(fxcqrs.Config{},
			fxcqrs.WithMiddleware(o.UnitOfWork()),
			fxcqrs.WithCommandHandlers(commandFunc[RemindIn](func(ctx context.Context, c RemindIn) error {
				_, err := fxoutbox.ScheduleAfter(ctx, c.Delay, Reminder{ID: c.ID})
				return err
			})),
			fxcqrs.WithEventHandlers(eventFunc[Reminder](func(_ context.Context, r Reminder) error {
				handled <- r.ID
				return nil
			})))
		require.NoError(t, err)
		o.DeliverTo(m)
		dead := received(t, gc, "reminders_poison")
		require.NoError(t, o.Start(context.Background()))
		require.NoError(t, bus.Start(context.Background(), m))
		t.Cleanup(func() {
			require.NoError(t, bus.Stop(context.Background()))
			require.NoError(t, m.Stop(context.Background()))
			require.NoError(t, o.Stop(context.Background()))
		})

		require.NoError(t, fxcqrs.Exec(context.Background(), m, RemindIn{ID: 1, Delay: time.Hour}))
		require.NoError(t, fxcqrs.Exec(context.Background(), m, RemindIn{ID: 2, Delay: 30 * time.Minute}))

		clock.Advance(36 * time.Minute) // reminder 2 is due, six minutes late
		msg := next(t, dead)
		assert.JSONEq(t, `{"ID":2}`, string(msg.Payload))
		assert.Contains(t, msg.Metadata.Get(middleware.ReasonForPoisonedKey), "expired: ")
		assert.Equal(t, start.Add(35*time.Minute).Format("2006-01-02T15:04:05.000000000Z07:00"), msg.Metadata.Get(fxbus.MetadataDeliverBy),
			"five minutes after its due time")

		clock.Advance(25 * time.Minute) // reminder 1 is due, a minute late: in time
		select {
		case id := <-handled:
			assert.Equal(t, 1, id, "only the one in time is handled")
		case <-time.After(time.Minute):
			t.Fatal("the reminder in time was not handled")
		}
		require.Eventually(t, func() bool { st := bus.Stats(); return st.Handled == 1 && st.Expired == 1 }, time.Minute, time.Millisecond)
		select {
		case id := <-handled:
			t.Fatalf("reminder %d handled too", id)
		default:
		}
	})
}
