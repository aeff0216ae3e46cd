package fxoutbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type (
	// Spread emits one event to each of three topics; Later schedules one.
	Spread   struct{}
	Later    struct{}
	ToPoison struct{}
	ToDown   struct{}
	ToFine   struct{}
)

// The read API: the backlog per topic with its lag by the outbox's clock,
// the relay's lag, the dead letters per topic, the schedule.
func TestInspect(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		clock := newFakeClock()
		t0 := clock.Now()
		pub := &pickyPublisher{kept: map[string]int{}}
		bus, err := fxbus.New(fxbus.Config{Publisher: pub}, []fxbus.Routing{
			fxbus.NewRoute[ToPoison]("poison"), fxbus.NewRoute[ToDown]("down"), fxbus.NewRoute[ToFine]("fine"),
		}, nil)
		require.NoError(t, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Now: clock.Now, After: clock.After, MaxLag: 10 * time.Second, Relay: fxoutbox.RelayConfig{
			Undeliverable: func(err error) bool { return errors.Is(err, errTooLarge) },
		}}, nil)
		require.NoError(t, err)
		m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()), fxcqrs.WithCommandHandlers(
			commandFunc[Spread](func(ctx context.Context, _ Spread) error {
				fxcqrs.Emit(ctx, ToPoison{})
				fxcqrs.Emit(ctx, ToDown{})
				fxcqrs.Emit(ctx, ToFine{})
				return nil
			}),
			commandFunc[Later](func(ctx context.Context, _ Later) error {
				_, err := fxoutbox.ScheduleAfter(ctx, time.Hour, ToFine{})
				return err
			})))
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, m.Stop(ctx)) })
		o.DeliverTo(m)

		require.NoError(t, fxcqrs.Exec(ctx, m, Spread{}))
		clock.Advance(5 * time.Second)
		backlog, err := o.Backlog(ctx)
		require.NoError(t, err)
		assert.Equal(t, []fxoutbox.TopicBacklog{
			{Topic: "down", Rows: 1, Due: 1, Lag: 5 * time.Second},
			{Topic: "fine", Rows: 1, Due: 1, Lag: 5 * time.Second},
			{Topic: "poison", Rows: 1, Due: 1, Lag: 5 * time.Second},
		}, backlog)
		lag, err := o.Lag(ctx)
		require.NoError(t, err)
		assert.Equal(t, 5*time.Second, lag)
		health := fxcqrs.NewHealth(o.Checks()...)
		require.NoError(t, health.Ready(ctx), "5s behind, within MaxLag")

		require.NoError(t, fxcqrs.Exec(ctx, m, Later{}))
		sched, err := o.Scheduled(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, sched.Rows)
		assert.True(t, sched.Next.Equal(t0.Add(5*time.Second+time.Hour)), "next %v", sched.Next)

		require.NoError(t, o.Start(ctx))
		t.Cleanup(func() { require.NoError(t, o.Stop(ctx)) })
		waitFor(t, func() bool { return pub.got("fine") == 1 && o.Stats().DeadLettered == 1 })
		dead, err := o.DeadLetters(ctx)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		assert.Equal(t, "poison", dead[0].Topic)
		assert.Equal(t, 1, dead[0].Rows)
		assert.True(t, dead[0].Last.Equal(t0.Add(5*time.Second)), "failed at %v", dead[0].Last)
		clock.Advance(10 * time.Second)
		// The fine row's window has ended (RelayConfig.ProgressInterval):
		// the relay deletes it.
		waitFor(t, func() bool {
			return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE topic = 'fine'") == 0
		})
		lag, err = o.Lag(ctx)
		require.NoError(t, err)
		assert.Equal(t, 15*time.Second, lag, "the down topic's row still waits")
		require.ErrorContains(t, health.Ready(ctx), "fxoutbox.relay: the relay is 15s behind, over Config.MaxLag (10s)")
		require.NoError(t, health.Live(ctx), "unready, not dead")
		backlog, err = o.Backlog(ctx)
		require.NoError(t, err)
		assert.Equal(t, []fxoutbox.TopicBacklog{{Topic: "down", Rows: 1, Due: 1, Lag: 15 * time.Second}}, backlog)
	})
}
