package fxcqrstest_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrstest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

type (
	Order  struct{ ID int }
	Placed struct{ ID int }
	Remind struct{ ID int }
	Noted  struct{ ID int }
)

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// A session over an application on the in-process broker: the command,
// its routed event through the outbox, the relay and the broker back to
// the application's own subscription, whose handler schedules a reminder
// an hour on. Settle returns once all of it has happened, and the
// reminder is not due; once the clock passes it, Settle returns after it
// ran. No sleep in the test.
func TestSession(t *testing.T) {
	t.Parallel()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	clock := outboxtest.NewClock(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC))
	var reminded atomic.Int32
	s := fxcqrstest.NewSession(t, clock.Now,
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Inbox: true, Now: clock.Now, After: clock.After}),
		fxbus.Route[Placed]("placed"),
		fxbus.Subscribe[Placed]("placed"),
		fxoutbox.Schedulable[Remind](),
		fxcqrs.AsCommandHandler(func() commandFunc[Order] {
			return func(ctx context.Context, c Order) error {
				fxcqrs.Emit(ctx, Placed(c))
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Placed] {
			return func(ctx context.Context, e Placed) error {
				if fxbus.MessageID(ctx) == "" {
					return nil // the in-process copy: the inbound one schedules
				}
				_, err := fxoutbox.ScheduleAfter(ctx, time.Hour, Remind(e))
				return err
			}
		}),
		fxcqrs.AsCommandHandler(func() commandFunc[Remind] {
			return func(context.Context, Remind) error { reminded.Add(1); return nil }
		}),
	)
	ctx := context.Background()
	require.NoError(t, fxcqrs.Exec(ctx, s.Mediator, Order{ID: 7}))
	require.NoError(t, s.Settle(ctx))
	happened := names(s.Happened())
	assert.Contains(t, happened, "sent Placed @placed")
	assert.Contains(t, happened, "processed Placed @placed")
	assert.Zero(t, reminded.Load(), "not due")

	clock.Advance(time.Hour)
	require.NoError(t, s.Settle(ctx))
	assert.Equal(t, int32(1), reminded.Load())
	assert.Contains(t, names(s.Happened()), "processed Remind @fxcqrs.local", "the scheduled command, delivered")
	t.Logf("happened: %s", strings.Join(names(s.Happened()), " | "))
}

// Settle says what is still pending when it gives up.
func TestSessionSaysWhatIsPending(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	s := fxcqrstest.NewSession(t, nil, fx.NopLogger, fxcqrs.Module,
		fxcqrs.AsCommandHandler(func() commandFunc[Order] {
			return func(context.Context, Order) error { <-block; return nil }
		}))
	s.Timeout = 50 * time.Millisecond
	done := make(chan error)
	go func() { done <- fxcqrs.Exec(context.Background(), s.Mediator, Order{ID: 1}) }()
	require.Eventually(t, func() bool { return s.Mediator.Stats().InFlight == 1 }, time.Minute, time.Millisecond)
	err := s.Settle(context.Background())
	require.ErrorContains(t, err, "not settled after 50ms: 1 mediator calls in flight")
	close(block)
	require.NoError(t, <-done)
	s.Timeout = 10 * time.Second
	require.NoError(t, s.Settle(context.Background()))
}

func names(hs []fxcqrstest.Happening) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

// loggingTB records what is written to the test's log.
type loggingTB struct {
	testing.TB
	mu    sync.Mutex
	lines []string
}

func (l *loggingTB) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *loggingTB) Log(args ...any) { l.Logf("%s", fmt.Sprint(args...)) }

// A session's application writes fx's log of its start and stop to the
// test's log only under go test -v.
func TestSessionIsQuiet(t *testing.T) {
	t.Parallel()
	tb := &loggingTB{TB: t}
	s := fxcqrstest.NewSession(tb, nil, fxcqrs.Module)
	require.NoError(t, s.Settle(context.Background()))
	require.NoError(t, s.App.Stop(context.Background()))
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if testing.Verbose() {
		assert.NotEmpty(t, tb.lines, "-v: fx's log")
		return
	}
	assert.Empty(t, tb.lines, "fx's log, unasked")
}

// Commands that schedule, one after another, while the relay sends and
// deletes the rows of the ones before: on SQLite's one connection they
// wait for each other instead of failing with SQLITE_BUSY (fxoutbox's
// Start refuses a pool of more; outboxtest opens one).
func TestSessionOnSQLiteBesideABusyRelay(t *testing.T) {
	t.Parallel()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	clock := outboxtest.NewClock(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC))
	var placed atomic.Int32
	s := fxcqrstest.NewSession(t, clock.Now,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Inbox: true, Now: clock.Now, After: clock.After}),
		// A topic of its own: the in-process broker is the process's,
		// shared with TestSession running beside it.
		fxbus.Route[Placed]("placed-busy"),
		fxbus.Subscribe[Placed]("placed-busy"),
		fxoutbox.Schedulable[Remind](),
		fxoutbox.Durable[Noted](),
		fxcqrs.AsCommandHandler(func() commandFunc[Order] {
			return func(ctx context.Context, c Order) error {
				// A read before the writes: in WAL mode the transaction
				// that read turns into a writer, which a second
				// connection's commit makes fail at once.
				var n int
				if err := fxoutbox.Tx(ctx).QueryRowContext(ctx, "SELECT COUNT(*) FROM fxcqrs_outbox").Scan(&n); err != nil {
					return err
				}
				fxcqrs.Emit(ctx, Placed(c))
				fxcqrs.Emit(ctx, Noted(c))
				_, err := fxoutbox.ScheduleAfter(ctx, time.Hour, Remind(c))
				return err
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Noted] {
			return func(context.Context, Noted) error { return nil }
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Placed] {
			return func(ctx context.Context, _ Placed) error {
				if fxbus.MessageID(ctx) != "" {
					placed.Add(1)
				}
				return nil
			}
		}),
		fxcqrs.AsCommandHandler(func() commandFunc[Remind] {
			return func(context.Context, Remind) error { return nil }
		}),
	)
	ctx := context.Background()
	const commands = 30
	for i := range commands {
		require.NoError(t, fxcqrs.Exec(ctx, s.Mediator, Order{ID: i}), "command %d", i)
	}
	require.NoError(t, s.Settle(ctx))
	assert.Equal(t, int32(commands), placed.Load())
}
