package fxcqrstest_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrstest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// The session test as docs/testing.md shows it: a whole application on
// the in-process broker and a fake clock; Settle returns once everything
// the command set off has happened (relayed, delivered, handled) and the
// reminder an hour on is not due; after the clock passes it, Settle
// returns once it ran. No sleep.
//
// A test, not an Example with // Output:, because the kit takes the
// test's testing.TB and an Example gets none. It could be handed a fake
// (a struct that embeds testing.TB gets the interface's unexported
// method), but the snippet would then show code no user writes, and the
// fake would panic on the first TB method the kit calls that it lacks.
func TestExampleSession(t *testing.T) {
	t.Parallel()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	var reminded atomic.Int32
	// snippet:session
	clock := outboxtest.NewClock(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC))
	s := fxcqrstest.NewSession(t, clock.Now,
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Now: clock.Now, After: clock.After}),
		fxbus.Route[Placed]("example-session"),
		fxbus.Subscribe[Placed]("example-session"), // the billing side, here in one app
		fxcqrs.AsEventHandler(func() eventFunc[Placed] {
			return func(context.Context, Placed) error { return nil }
		}),
		fxoutbox.Schedulable[Remind](),
		fxcqrs.AsCommandHandler(func() commandFunc[Order] {
			return func(ctx context.Context, c Order) error {
				fxcqrs.Emit(ctx, Placed(c))
				_, err := fxoutbox.ScheduleAfter(ctx, time.Hour, Remind(c))
				return err
			}
		}),
		fxcqrs.AsCommandHandler(func() commandFunc[Remind] {
			return func(context.Context, Remind) error { reminded.Add(1); return nil }
		}),
	)
	ctx := context.Background()
	require.NoError(t, fxcqrs.Exec(ctx, s.Mediator, Order{ID: 7}))
	require.NoError(t, s.Settle(ctx)) // relayed, delivered, handled; the reminder not due
	require.Zero(t, reminded.Load())
	clock.Advance(time.Hour)
	require.NoError(t, s.Settle(ctx)) // and now the reminder ran
	require.EqualValues(t, 1, reminded.Load())
	// end snippet
}
