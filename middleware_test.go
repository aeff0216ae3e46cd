package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// tracer is a middleware that records what it wraps, under a label.
type tracer struct {
	label string
	rec   *recorder
}

func (t tracer) Handle(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
	t.rec.add(fmt.Sprintf("%s>%s %s", t.label, call.Kind, call.MessageType[len("github.com/fxcqrs/fxcqrs_test."):]))
	out, err := next(ctx)
	t.rec.add("<" + t.label)
	return out, err
}

// Distinct middleware types, to check the tie-break by type name.
type (
	mwAlpha struct{ tracer }
	mwBeta  struct{ tracer }
)

func TestMiddlewareOrderIsDeterministic(t *testing.T) {
	t.Parallel()
	for range 5 { // fx shuffles groups: several runs, one order
		var rec recorder
		var m *fxcqrs.Mediator
		app := fxtest.New(t,
			fxcqrs.Module,
			fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] { return emitAll[PlaceOrder]() }),
			fxcqrs.AsMiddleware(func() fxcqrs.Middleware { return mwBeta{tracer{"beta", &rec}} }),
			fxcqrs.AsMiddleware(func() fxcqrs.Middleware { return mwAlpha{tracer{"alpha", &rec}} }),
			fxcqrs.AsMiddleware(func() fxcqrs.Middleware { return fxcqrs.WithOrder(tracer{"outer", &rec}, -5) }),
			fxcqrs.AsMiddleware(func() fxcqrs.Middleware { return fxcqrs.WithOrder(tracer{"inner", &rec}, 5) }),
			fx.Populate(&m),
		)
		app.RequireStart()
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
		app.RequireStop()
		assert.Equal(t, []string{
			"outer>command PlaceOrder", "alpha>command PlaceOrder", "beta>command PlaceOrder", "inner>command PlaceOrder",
			"<inner", "<beta", "<alpha", "<outer",
		}, rec.get(), "by order, then type name")
	}
}

func TestMiddlewareScopes(t *testing.T) {
	t.Parallel()
	var rec recorder
	m := newMediator(t, sequential(),
		fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](func(ctx context.Context, c PlaceOrder) (Receipt, error) {
			fxcqrs.Emit(ctx, Shipped{ID: c.ID})
			return Receipt{ID: c.ID}, nil
		})),
		fxcqrs.WithCommandHandlers(emitAll[CancelOrder]()),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(context.Context, Shipped) error { return nil })),
		fxcqrs.WithMiddleware(
			fxcqrs.ForKinds(tracer{"events", &rec}, fxcqrs.KindEvent),
			fxcqrs.ForMessages(tracer{"cancels", &rec}, reflect.TypeFor[CancelOrder]()),
			tracer{"all", &rec},
		),
	)
	_, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 1})
	require.NoError(t, err)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, CancelOrder{}))
	// Same order and type name: registration order decides.
	assert.Equal(t, []string{
		"all>request PlaceOrder", "<all",
		"events>event Shipped", "all>event Shipped", "<all", "<events",
		"cancels>command CancelOrder", "all>command CancelOrder", "<all", "<cancels",
	}, rec.get())
}

func TestMiddlewareSeesTheCall(t *testing.T) {
	t.Parallel()
	var got []fxcqrs.Call
	var mu sync.Mutex
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithRequestHandlers(&placeOrderHandler{}),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return nil })),
		fxcqrs.WithMiddleware(fxcqrs.MiddlewareFunc(func(ctx context.Context, c fxcqrs.Call, next fxcqrs.Next) (any, error) {
			mu.Lock()
			got = append(got, c)
			mu.Unlock()
			return next(ctx)
		})),
	)
	res, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 4})
	require.NoError(t, err)
	assert.Equal(t, Receipt{ID: 4}, res)
	assert.Equal(t, []fxcqrs.Call{
		{Kind: fxcqrs.KindRequest, Message: PlaceOrder{ID: 4}, MessageType: "github.com/fxcqrs/fxcqrs_test.PlaceOrder", Handler: "*github.com/fxcqrs/fxcqrs_test.placeOrderHandler"},
		{Kind: fxcqrs.KindEvent, Message: OrderPlaced{ID: 4}, MessageType: "github.com/fxcqrs/fxcqrs_test.OrderPlaced", Handler: "github.com/fxcqrs/fxcqrs_test.eventFunc[github.com/fxcqrs/fxcqrs_test.OrderPlaced]"},
	}, got)
}

func TestMiddlewareAnswersAndPanics(t *testing.T) {
	t.Parallel()
	var handled atomic.Int32
	handler := requestFunc[PlaceOrder, Receipt](func(context.Context, PlaceOrder) (Receipt, error) {
		handled.Add(1)
		return Receipt{ID: 1}, nil
	})
	cache := fxcqrs.MiddlewareFunc(func(ctx context.Context, c fxcqrs.Call, next fxcqrs.Next) (any, error) {
		if c.Message.(PlaceOrder).ID == 99 {
			return Receipt{ID: 99}, nil // answered without the handler
		}
		if c.Message.(PlaceOrder).ID == 7 {
			return "not a receipt", nil
		}
		if c.Message.(PlaceOrder).ID == 13 {
			panic("middleware broke")
		}
		return next(ctx)
	})
	m := newMediator(t, fxcqrs.Config{}, fxcqrs.WithRequestHandlers(handler), fxcqrs.WithMiddleware(cache))

	res, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 99})
	require.NoError(t, err)
	assert.Equal(t, Receipt{ID: 99}, res)
	assert.Zero(t, handled.Load())

	_, err = fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 7})
	assert.ErrorContains(t, err, "middleware answered string for github.com/fxcqrs/fxcqrs_test.PlaceOrder")

	_, err = fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 13})
	var pe *fxcqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "middleware broke", pe.Value)
	assert.Zero(t, m.Stats().InFlight)
}

func TestLoggingMiddleware(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	errBoom := errors.New("boom")
	errOutOfStock := errors.New("out of stock")
	errLedger := errors.New("ledger down")
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			switch c.ID {
			case -1:
				return errBoom
			case -2:
				return fmt.Errorf("order %d: %w", c.ID, errOutOfStock)
			case 7:
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
			}
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return errLedger })),
		fxcqrs.WithMiddleware(fxcqrs.Logging(zap.New(core), fxcqrs.ErrorLevel(func(err error) zapcore.Level {
			if errors.Is(err, errOutOfStock) {
				return zapcore.InfoLevel // a business outcome, not a fault
			}
			return zapcore.ErrorLevel
		}))),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	require.ErrorIs(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: -1}), errBoom)
	require.ErrorIs(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: -2}), errOutOfStock)
	require.ErrorIs(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 7}), errLedger)

	entries := logs.All()
	require.Len(t, entries, 5)
	for _, e := range entries {
		assert.Equal(t, "fxcqrs", e.LoggerName)
		assert.NotContains(t, e.ContextMap(), "message", "a field named message collides with the encoders' message key")
	}
	assert.Equal(t, zapcore.DebugLevel, entries[0].Level)
	assert.Equal(t, "handled", entries[0].Message)

	assert.Equal(t, zapcore.ErrorLevel, entries[1].Level)
	assert.Equal(t, "failed", entries[1].Message)
	fields := entries[1].ContextMap()
	assert.Equal(t, "command", fields["kind"])
	assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.PlaceOrder", fields["messageType"])
	assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.commandFunc[github.com/fxcqrs/fxcqrs_test.PlaceOrder]", fields["handler"])
	assert.Equal(t, "boom", fields["error"])
	assert.Contains(t, fields, "duration")

	assert.Equal(t, zapcore.InfoLevel, entries[2].Level, "the classifier chose the level")

	// The event handler's own line, then the call's, which reports what
	// the caller received: the response, and the events' failure.
	assert.Equal(t, "event", entries[3].ContextMap()["kind"])
	assert.Equal(t, "failed", entries[3].Message)
	assert.Equal(t, "command", entries[4].ContextMap()["kind"])
	assert.Equal(t, "handled, events failed", entries[4].Message)
	assert.Equal(t, zapcore.ErrorLevel, entries[4].Level)
	assert.Contains(t, entries[4].ContextMap()["error"], "ledger down")
}

func TestTimeoutMiddleware(t *testing.T) {
	t.Parallel()
	var eventDeadline atomic.Bool
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, _ PlaceOrder) error {
			fxcqrs.Emit(ctx, Shipped{})
			<-ctx.Done() // a handler that honours its deadline
			return ctx.Err()
		})),
		fxcqrs.WithRequestHandlers(requestFunc[CancelOrder, bool](func(ctx context.Context, _ CancelOrder) (bool, error) {
			_, has := ctx.Deadline()
			return has, nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(ctx context.Context, _ Shipped) error {
			_, has := ctx.Deadline()
			eventDeadline.Store(has)
			return nil
		})),
		fxcqrs.WithMiddleware(fxcqrs.Timeout(fxcqrs.Timeouts{Command: time.Millisecond, Event: time.Hour})),
	)
	err := fxcqrs.Exec(context.Background(), m, PlaceOrder{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, eventDeadline.Load(), "the failed command's event was discarded")

	hasDeadline, err := fxcqrs.Send[bool](context.Background(), m, CancelOrder{})
	require.NoError(t, err)
	assert.False(t, hasDeadline, "requests have no timeout configured")

	require.NoError(t, fxcqrs.Publish(context.Background(), m, Shipped{}))
	assert.True(t, eventDeadline.Load(), "events have theirs")
}

// flaky fails its first n attempts per event, emitting a follow-up each
// time, and counts attempts.
type flaky struct {
	failures int
	mu       sync.Mutex
	attempts map[int]int
	g        *gauge
}

func (f *flaky) Handle(ctx context.Context, e OrderPlaced) error {
	f.g.enter()
	defer f.g.leave()
	f.mu.Lock()
	f.attempts[e.ID]++
	n := f.attempts[e.ID]
	f.mu.Unlock()
	fxcqrs.Emit(ctx, Audited{ID: e.ID*100 + n}) // one follow-up per attempt
	if n <= f.failures {
		return fmt.Errorf("attempt %d failed", n)
	}
	return nil
}

func TestRetryMiddleware(t *testing.T) {
	t.Parallel()
	newM := func(t *testing.T, failures int, p fxcqrs.RetryPolicy, audits *recorder) (*fxcqrs.Mediator, *flaky) {
		f := &flaky{failures: failures, attempts: map[int]int{}, g: newGauge()}
		m := newMediator(t, limit(1),
			fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{ID: 1}), emit(OrderPlaced{ID: 2}))),
			fxcqrs.WithEventHandlers(f, eventFunc[Audited](func(_ context.Context, a Audited) error {
				audits.add(fmt.Sprint(a.ID))
				return nil
			})),
			fxcqrs.WithMiddleware(fxcqrs.Retry(p)),
		)
		return m, f
	}
	fast := fxcqrs.RetryPolicy{Attempts: 3, Initial: time.Microsecond, Max: 10 * time.Microsecond}

	t.Run("succeeds after failures, on its slot", func(t *testing.T) {
		t.Parallel()
		var audits recorder
		m, f := newM(t, 2, fast, &audits)
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
		assert.Equal(t, map[int]int{1: 3, 2: 3}, f.attempts)
		assert.ElementsMatch(t, []string{"103", "203"}, audits.get(), "only the successful attempt's follow-ups")
		_, peak, _ := f.g.snapshot()
		assert.Equal(t, 1, peak, "retries never exceed the limit")
	})
	t.Run("gives up after the attempts", func(t *testing.T) {
		t.Parallel()
		var audits recorder
		m, f := newM(t, 5, fast, &audits)
		err := fxcqrs.Exec(context.Background(), m, PlaceOrder{})
		var evErr *fxcqrs.EventError
		require.ErrorAs(t, err, &evErr)
		require.Len(t, evErr.Failures, 2)
		assert.EqualError(t, evErr.Failures[0].Err, "attempt 3 failed")
		assert.Equal(t, map[int]int{1: 3, 2: 3}, f.attempts)
		assert.Empty(t, audits.get())
	})
	t.Run("not retryable", func(t *testing.T) {
		t.Parallel()
		var audits recorder
		p := fast
		p.Retryable = func(error) bool { return false }
		m, f := newM(t, 1, p, &audits)
		require.Error(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
		assert.Equal(t, map[int]int{1: 1, 2: 1}, f.attempts)
	})
	t.Run("context ends the wait", func(t *testing.T) {
		t.Parallel()
		var audits recorder
		slow := fxcqrs.RetryPolicy{Attempts: 5, Initial: time.Hour}
		m, f := newM(t, 5, slow, &audits)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- fxcqrs.Exec(ctx, m, PlaceOrder{}) }()
		waitUntil(t, "the first attempt", func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.attempts[1] == 1
		})
		cancel()
		err := <-done
		require.Error(t, err)
		assert.ErrorContains(t, err, "attempt 1 failed")
		assert.ErrorIs(t, err, context.Canceled, "the second event never started")
	})
}

func TestAsMiddlewareRejectsNonMiddleware(t *testing.T) {
	t.Parallel()
	err := fx.ValidateApp(fxcqrs.Module, fxcqrs.AsMiddleware(func() int { return 1 }))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "fxcqrs.AsMiddleware(github.com/fxcqrs/fxcqrs_test.TestAsMiddlewareRejectsNonMiddleware.func1): int does not implement fxcqrs.Middleware")
}

// TestTimeoutBoundsRetries: the event timeout sits outside retry, so its
// deadline ends the attempts; the retries stay on their one slot.
func TestTimeoutBoundsRetries(t *testing.T) {
	t.Parallel()
	g := newGauge()
	var attempts atomic.Int32
	errDown := errors.New("down")
	m := newMediator(t, limit(1),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(Shipped{ID: 1}), emit(Shipped{ID: 2}))),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(context.Context, Shipped) error {
			g.enter()
			defer g.leave()
			attempts.Add(1)
			return errDown
		})),
		fxcqrs.WithMiddleware(
			// Registered inner first: the order comes from OrderTimeout < OrderRetry.
			fxcqrs.Retry(fxcqrs.RetryPolicy{Attempts: 1000, Initial: 5 * time.Millisecond, Max: 5 * time.Millisecond}),
			fxcqrs.Timeout(fxcqrs.Timeouts{Event: 200 * time.Millisecond}),
		),
	)
	err := fxcqrs.Exec(context.Background(), m, PlaceOrder{})
	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr)
	require.Len(t, evErr.Failures, 2)
	for _, f := range evErr.Failures {
		assert.ErrorIs(t, f.Err, errDown, "the last attempt's error")
		assert.True(t, f.Started)
	}
	// Waits of at least 4ms in 200ms: the deadline, not the 1000 attempts,
	// ended each invocation's retries.
	assert.Less(t, attempts.Load(), int32(2*100))
	assert.Greater(t, attempts.Load(), int32(2))
	_, peak, _ := g.snapshot()
	assert.Equal(t, 1, peak, "retries never exceed the limit")
}

// The invariant a unit of work rests on: request and command middleware
// wraps only the handler, and the call's events are processed after the
// whole chain has returned. A transaction committed by middleware is
// committed before any in-process event handler runs.
func TestEventsRunAfterTheChainReturns(t *testing.T) {
	t.Parallel()
	for name, cfg := range eventModes() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var committed atomic.Bool
			var early atomic.Int32 // event handlers that ran before the commit
			unitOfWork := fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
				committed.Store(false)
				out, err := next(ctx)
				committed.Store(true)
				return out, err
			}), fxcqrs.KindRequest, fxcqrs.KindCommand)
			check := func(context.Context, OrderPlaced) error {
				if !committed.Load() {
					early.Add(1)
				}
				return nil
			}
			m := newMediator(t, cfg,
				fxcqrs.WithMiddleware(unitOfWork),
				fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{ID: 1}), emit(OrderPlaced{ID: 2}))),
				fxcqrs.WithRequestHandlers(requestFunc[CancelOrder, int](func(ctx context.Context, _ CancelOrder) (int, error) {
					fxcqrs.Emit(ctx, OrderPlaced{ID: 3})
					return 3, nil
				})),
				fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](check), eventFunc[OrderPlaced](check)),
			)
			require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
			_, err := fxcqrs.Send[int](context.Background(), m, CancelOrder{})
			require.NoError(t, err)
			assert.Zero(t, early.Load(), "event handlers ran before the middleware chain returned")
		})
	}
}

// namedCmd names each of its calls, as the saga module's steps do.
type namedCmd struct{ Step string }

func (c namedCmd) CallName() string { return "step " + c.Step }

// A command whose type has CallName is seen under that name by
// middleware and observers.
func TestCallName(t *testing.T) {
	t.Parallel()
	var seen []string
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithMiddleware(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
			seen = append(seen, call.MessageType)
			return next(ctx)
		})),
		fxcqrs.WithCommandHandlers(commandFunc[namedCmd](func(context.Context, namedCmd) error { return nil })),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, namedCmd{Step: "a"}))
	require.NoError(t, fxcqrs.Exec(context.Background(), m, namedCmd{Step: "b"}))
	assert.Equal(t, []string{"step a", "step b"}, seen)
}
