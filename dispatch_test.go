package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSeedScenario is python-cqrs's example: a handler emits four events;
// with a limit of 3, three handlers run at once, the fourth waits for a
// slot, and the response comes after all four.
func TestSeedScenario(t *testing.T) {
	t.Parallel()
	g := newGauge()
	release := make(chan struct{})
	m := newMediator(t, limit(3),
		fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](func(ctx context.Context, c PlaceOrder) (Receipt, error) {
			fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
			fxcqrs.Emit(ctx, Shipped{ID: c.ID})
			fxcqrs.Emit(ctx, Audited{ID: c.ID})
			fxcqrs.Emit(ctx, Notified{ID: c.ID})
			return Receipt{ID: c.ID}, nil
		})),
		fxcqrs.WithEventHandlers(
			blocking[OrderPlaced](g, release),
			blocking[Shipped](g, release),
			blocking[Audited](g, release),
			blocking[Notified](g, release),
		),
	)
	type result struct {
		r   Receipt
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 1})
		done <- result{r, err}
	}()

	g.waitFor(t, "three handlers running", func(cur, _, _ int) bool { return cur == 3 })
	waitUntil(t, "the fourth queued", func() bool { return m.Stats().Events.Waiting == 1 })
	cur, peak, total := g.snapshot()
	assert.Equal(t, 3, cur)
	assert.Equal(t, 3, peak)
	assert.Equal(t, 3, total, "the fourth has not started")
	select {
	case <-done:
		t.Fatal("Send returned before its events finished")
	default:
	}

	close(release)
	res := <-done
	require.NoError(t, res.err)
	assert.Equal(t, Receipt{ID: 1}, res.r)
	_, peak, total = g.snapshot()
	assert.Equal(t, 4, total, "all four ran before the response")
	assert.Equal(t, 3, peak)
}

// TestLimitIsGlobal proves the limit for several values under load from
// many concurrent calls: the peak of running invocations equals the limit
// (or the whole fan-out when that is smaller) and never exceeds it, while
// the rest wait in the queue.
func TestLimitIsGlobal(t *testing.T) {
	t.Parallel()
	const calls, fanOut = 8, 5
	for _, lim := range []int{1, 3, 64} {
		t.Run(fmt.Sprint("limit ", lim), func(t *testing.T) {
			t.Parallel()
			g := newGauge()
			release := make(chan struct{})
			m := newMediator(t, limit(lim),
				fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
					for i := range fanOut {
						fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID*100 + i})
					}
					return nil
				})),
				fxcqrs.WithEventHandlers(blocking[OrderPlaced](g, release)),
			)
			var wg sync.WaitGroup
			for i := range calls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					assert.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: i}))
				}()
			}
			want := min(lim, calls*fanOut)
			g.waitFor(t, "the limit reached", func(cur, _, _ int) bool { return cur == want })
			waitUntil(t, "the rest queued", func() bool { return m.Stats().Events.Waiting == calls*fanOut-want })
			st := m.Stats().Events
			assert.Equal(t, want, st.Running)
			_, peak, _ := g.snapshot()
			assert.Equal(t, want, peak, "never more than the limit at once")

			close(release)
			wg.Wait()
			_, peak, total := g.snapshot()
			assert.Equal(t, calls*fanOut, total, "every invocation ran once")
			assert.Equal(t, want, peak)
		})
	}
}

// TestWaitingHoldsNoGoroutine: thousands of queued invocations cost queue
// nodes, not goroutines.
//
// Not parallel: it counts the process's goroutines.
func TestWaitingHoldsNoGoroutine(t *testing.T) {
	const events, lim = 5000, 4
	g := newGauge()
	release := make(chan struct{})
	m := newMediator(t, limit(lim),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			for i := range events {
				fxcqrs.Emit(ctx, OrderPlaced{ID: i})
			}
			return nil
		})),
		fxcqrs.WithEventHandlers(blocking[OrderPlaced](g, release)),
	)
	before := runtime.NumGoroutine()
	done := make(chan error, 1)
	go func() { done <- fxcqrs.Exec(context.Background(), m, PlaceOrder{}) }()
	g.waitFor(t, "the limit reached", func(cur, _, _ int) bool { return cur == lim })
	waitUntil(t, "the rest queued", func() bool { return m.Stats().Events.Waiting == events-lim })
	// The caller's goroutine runs one invocation itself; helpers run the
	// others: lim goroutines beyond the test's own, whatever the queue.
	assert.LessOrEqual(t, runtime.NumGoroutine()-before, lim+1)
	close(release)
	require.NoError(t, <-done)
	_, _, total := g.snapshot()
	assert.Equal(t, events, total)
}

// TestSlotsInEmitOrder: with one slot, invocations start in emit order,
// then handler order.
func TestSlotsInEmitOrder(t *testing.T) {
	t.Parallel()
	var rec recorder
	m := newMediator(t, limit(1),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			for i := range 20 {
				fxcqrs.Emit(ctx, OrderPlaced{ID: i})
				fxcqrs.Emit(ctx, Shipped{ID: i})
			}
			return nil
		})),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(_ context.Context, e OrderPlaced) error { rec.add(fmt.Sprint("placed ", e.ID)); return nil }),
			eventFunc[Shipped](func(_ context.Context, e Shipped) error { rec.add(fmt.Sprint("shipped ", e.ID)); return nil }),
		),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprint("placed ", i), fmt.Sprint("shipped ", i))
	}
	assert.Equal(t, want, rec.get())
}

// Distinct handler types, to check the documented order: by type name.
type (
	zetaHandler  struct{ rec *recorder }
	alphaHandler struct{ rec *recorder }
	midHandler   struct{ rec *recorder }
)

func (h zetaHandler) Handle(context.Context, OrderPlaced) error  { h.rec.add("zeta"); return nil }
func (h alphaHandler) Handle(context.Context, OrderPlaced) error { h.rec.add("alpha"); return nil }
func (h *midHandler) Handle(context.Context, OrderPlaced) error  { h.rec.add("mid"); return nil }

func TestEventHandlerOrder(t *testing.T) {
	t.Parallel()
	for _, cfg := range []fxcqrs.Config{sequential(), limit(1)} {
		var rec recorder
		hs := []any{zetaHandler{&rec}, &midHandler{&rec}, alphaHandler{&rec}}
		// Every registration order gives the same run order.
		for _, perm := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 0, 2}, {1, 2, 0}} {
			rec = recorder{}
			m := newMediator(t, cfg, fxcqrs.WithEventHandlers(hs[perm[0]], hs[perm[1]], hs[perm[2]]))
			require.NoError(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{}))
			// "*github.com/...midHandler" sorts before the others: '*' < 'g'.
			assert.Equal(t, []string{"mid", "alpha", "zeta"}, rec.get(), "registration order %v", perm)
		}
	}
}

// TestSequential: one after another on the caller's goroutine, follow-ups
// breadth first.
func TestSequential(t *testing.T) {
	t.Parallel()
	var rec recorder
	g := newGauge()
	handler := func(name string, follow func(ctx context.Context)) func(ctx context.Context) {
		return func(ctx context.Context) {
			g.enter()
			defer g.leave()
			rec.add(name)
			if follow != nil {
				follow(ctx)
			}
		}
	}
	m := newMediator(t, sequential(),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{1}), emit(Shipped{1}))),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
				handler("placed", emit(Audited{1}))(ctx)
				return nil
			}),
			eventFunc[Shipped](func(ctx context.Context, _ Shipped) error {
				handler("shipped", emit(Notified{1}))(ctx)
				return nil
			}),
			eventFunc[Audited](func(ctx context.Context, _ Audited) error { handler("audited", nil)(ctx); return nil }),
			eventFunc[Notified](func(ctx context.Context, _ Notified) error { handler("notified", nil)(ctx); return nil }),
		),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	assert.Equal(t, []string{"placed", "shipped", "audited", "notified"}, rec.get(), "breadth first")
	_, peak, _ := g.snapshot()
	assert.Equal(t, 1, peak)
	assert.Zero(t, m.Stats().Events.Running+m.Stats().Events.Waiting, "the dispatcher was not used")
}

func TestFollowUps(t *testing.T) {
	t.Parallel()
	for _, cfg := range []fxcqrs.Config{limit(1), limit(4), sequential()} {
		errFail := errors.New("fail")
		var notified, audited atomic.Int32
		m := newMediator(t, cfg,
			fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{1}), emit(Shipped{2}))),
			fxcqrs.WithEventHandlers(
				eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
					fxcqrs.Emit(ctx, Audited{})
					return nil
				}),
				eventFunc[Shipped](func(ctx context.Context, _ Shipped) error {
					fxcqrs.Emit(ctx, Notified{})
					return errFail // its follow-up is discarded with it
				}),
				eventFunc[Audited](func(context.Context, Audited) error { audited.Add(1); return nil }),
				eventFunc[Notified](func(context.Context, Notified) error { notified.Add(1); return nil }),
			),
		)
		err := fxcqrs.Exec(context.Background(), m, PlaceOrder{})
		assert.ErrorIs(t, err, errFail)
		assert.Equal(t, int32(1), audited.Load(), "follow-ups run before the call returns")
		assert.Zero(t, notified.Load(), "follow-ups of a failed handler are discarded")
	}
}

func TestRunawayChainStops(t *testing.T) {
	t.Parallel()
	for _, cfg := range []fxcqrs.Config{limit(2), sequential()} {
		var runs atomic.Int32
		m := newMediator(t, cfg,
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
				runs.Add(1)
				fxcqrs.Emit(ctx, OrderPlaced{ID: e.ID + 1})
				return nil
			})),
		)
		err := fxcqrs.Publish(context.Background(), m, OrderPlaced{})
		require.ErrorIs(t, err, fxcqrs.ErrMaxDepth)
		require.ErrorIs(t, err, fxcqrs.ErrNotStarted)
		assert.Equal(t, int32(fxcqrs.MaxDepth), runs.Load())
	}
}

// TestNestedCallsNeverDeadlock: an event handler holding the only slot
// makes calls whose events need a slot too.
func TestNestedCallsNeverDeadlock(t *testing.T) {
	t.Parallel()
	var (
		audited atomic.Int32
		m       *fxcqrs.Mediator
	)
	m = newMediator(t, fxcqrs.Config{
		Events:       fxcqrs.EventConfig{MaxConcurrentHandlers: 1},
		StreamEvents: fxcqrs.EventConfig{MaxConcurrentHandlers: 1},
	},
		fxcqrs.WithCommandHandlers(
			emitAll[PlaceOrder](emit(OrderPlaced{1}), emit(OrderPlaced{2})),
			emitAll[CancelOrder](emit(Audited{})),
		),
		fxcqrs.WithStreamHandlers(streamFunc[Receipt, int](func(ctx context.Context, _ Receipt) func(func(int, error) bool) {
			return func(yield func(int, error) bool) {
				fxcqrs.Emit(ctx, Audited{})
				if !yield(1, nil) {
					return
				}
				// A stream event handler that sends a command: the other limit.
				fxcqrs.Emit(ctx, Notified{})
			}
		})),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
				if err := fxcqrs.Exec(ctx, m, CancelOrder{}); err != nil {
					return err
				}
				for _, err := range fxcqrs.Stream[int](ctx, m, Receipt{}) {
					if err != nil {
						return err
					}
				}
				return fxcqrs.Publish(ctx, m, Audited{})
			}),
			eventFunc[Audited](func(context.Context, Audited) error { audited.Add(1); return nil }),
			eventFunc[Notified](func(ctx context.Context, _ Notified) error {
				return fxcqrs.Exec(ctx, m, CancelOrder{})
			}),
		),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	// Per OrderPlaced: Exec(CancelOrder) 1, the stream's item 1 and its
	// trailing Notified → Exec(CancelOrder) 1, Publish 1.
	assert.Equal(t, int32(2*4), audited.Load())
}

// TestCancelledContextReportsUnstarted: invocations that never started
// because the caller's context ended are in the error, by event type. The
// caller's goroutine runs the first invocation itself here, so the others
// are found cancelled when they reach the head of the queue.
func TestCancelledContextReportsUnstarted(t *testing.T) {
	t.Parallel()
	g := newGauge()
	release := make(chan struct{})
	m := newMediator(t, limit(1),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{}), emit(Shipped{}), emit(Audited{}))),
		fxcqrs.WithEventHandlers(
			blocking[OrderPlaced](g, release),
			blocking[Shipped](g, release),
			blocking[Audited](g, release),
		),
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fxcqrs.Exec(ctx, m, PlaceOrder{}) }()
	g.waitFor(t, "the first handler running", func(cur, _, _ int) bool { return cur == 1 })
	waitUntil(t, "two queued", func() bool { return m.Stats().Events.Waiting == 2 })
	cancel()
	close(release)
	err := <-done

	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr)
	require.Len(t, evErr.Failures, 2)
	var types []string
	for _, f := range evErr.Failures {
		assert.ErrorIs(t, f.Err, fxcqrs.ErrNotStarted)
		assert.ErrorIs(t, f.Err, context.Canceled)
		assert.False(t, f.Started)
		types = append(types, f.EventType)
	}
	assert.ElementsMatch(t, []string{
		"github.com/fxcqrs/fxcqrs_test.Shipped",
		"github.com/fxcqrs/fxcqrs_test.Audited",
	}, types)
	_, _, total := g.snapshot()
	assert.Equal(t, 1, total, "the unstarted ones never ran")
}

// TestEventPanicOnHelperGoroutine: a panic on a helper goroutine becomes a
// *PanicError; the process survives.
func TestEventPanicOnHelperGoroutine(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	g := newGauge()
	m := newMediator(t, limit(2),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{}), emit(Shipped{}))),
		fxcqrs.WithEventHandlers(
			blocking[OrderPlaced](g, release), // holds the caller's goroutine
			eventFunc[Shipped](func(context.Context, Shipped) error {
				g.enter()
				defer g.leave()
				<-release
				panic(errors.New("helper exploded"))
			}),
		),
	)
	done := make(chan error, 1)
	go func() { done <- fxcqrs.Exec(context.Background(), m, PlaceOrder{}) }()
	g.waitFor(t, "both running, so on two goroutines", func(cur, _, _ int) bool { return cur == 2 })
	close(release)
	err := <-done
	var pe *fxcqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.EqualError(t, pe.Unwrap(), "helper exploded")
}

// streamFunc adapts a function to a stream handler.
type streamFunc[Req, Res any] func(context.Context, Req) func(func(Res, error) bool)

func (f streamFunc[Req, Res]) Handle(ctx context.Context, r Req) iter.Seq2[Res, error] {
	return f(ctx, r)
}

// TestCancelWhileWaitingForSlot: a call whose invocations all wait behind
// another call's returns as soon as its context ends, reporting them.
func TestCancelWhileWaitingForSlot(t *testing.T) {
	t.Parallel()
	g := newGauge()
	release := make(chan struct{})
	var shipped atomic.Int32
	m := newMediator(t, limit(1),
		fxcqrs.WithCommandHandlers(
			emitAll[PlaceOrder](emit(OrderPlaced{})),
			emitAll[CancelOrder](emit(Shipped{}), emit(Shipped{})),
		),
		fxcqrs.WithEventHandlers(
			blocking[OrderPlaced](g, release),
			eventFunc[Shipped](func(context.Context, Shipped) error { shipped.Add(1); return nil }),
		),
	)
	first := make(chan error, 1)
	go func() { first <- fxcqrs.Exec(context.Background(), m, PlaceOrder{}) }()
	g.waitFor(t, "the slot taken", func(cur, _, _ int) bool { return cur == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() { second <- fxcqrs.Exec(ctx, m, CancelOrder{}) }()
	waitUntil(t, "the second call's events queued", func() bool { return m.Stats().Events.Waiting == 2 })
	cancel()
	err := <-second // returns while the first call still holds the slot
	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr)
	assert.Len(t, evErr.Failures, 2)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, m.Stats().Events.Waiting)

	close(release)
	require.NoError(t, <-first)
	assert.Zero(t, shipped.Load())
}

// EventTypes lists the event types with handlers, interface types
// included, and nothing else.
func TestEventTypes(t *testing.T) {
	type Lost interface{ Lost() }
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(context.Context, PlaceOrder) error { return nil })),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return nil }),
			eventFunc[Shipped](func(context.Context, Shipped) error { return nil }),
			eventFunc[Shipped](func(context.Context, Shipped) error { return nil }),
			eventFunc[Lost](func(context.Context, Lost) error { return nil }),
		))
	assert.ElementsMatch(t, []reflect.Type{reflect.TypeFor[OrderPlaced](), reflect.TypeFor[Shipped](), reflect.TypeFor[Lost]()}, m.EventTypes())
}

// EventHandlers names an event type's own handlers, two of one type
// twice, and none for a type nothing handles.
func TestEventHandlers(t *testing.T) {
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithEventHandlers(
			eventFunc[Shipped](func(context.Context, Shipped) error { return nil }),
			eventFunc[Shipped](func(context.Context, Shipped) error { return nil }),
		))
	names := m.EventHandlers(reflect.TypeFor[Shipped]())
	require.Len(t, names, 2)
	assert.Equal(t, names[0], names[1])
	assert.Contains(t, names[0], "eventFunc[")
	assert.Empty(t, m.EventHandlers(reflect.TypeFor[OrderPlaced]()))
}
