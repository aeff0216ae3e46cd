package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// TestStopUnderLoad: fx's Stop while many calls are in flight, some slow.
// Every call either completes with its accounting intact or is refused
// with ErrStopped before it started; nothing stays in flight; a second
// Stop is harmless.
func TestStopUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  fxcqrs.Config
	}{{"limit 3", limit(3)}, {"sequential", sequential()}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(loadRates{fail: 5, panic: 2, slow: 30, nested: 5, followUp: 20, maxFanOut: 5})
			app := fxtest.New(t,
				fxcqrs.Module,
				fx.Supply(tc.cfg),
				fxcqrs.AsCommandHandler(func() commandFunc[loadCmd] { return w.commandHandlers()[0].(commandFunc[loadCmd]) }),
				fxcqrs.AsCommandHandler(func() commandFunc[loadNestedCmd] { return w.commandHandlers()[1].(commandFunc[loadNestedCmd]) }),
				fxcqrs.AsEventHandler(func() loadHA1 { return loadHA1{w} }),
				fxcqrs.AsEventHandler(func() loadHA2 { return loadHA2{w} }),
				fxcqrs.AsEventHandler(func() loadHB { return loadHB{w} }),
				fxcqrs.AsEventHandler(func() eventFunc[loadNestedEv] {
					return func(context.Context, loadNestedEv) error { return nil }
				}),
				fx.Populate(&w.m),
			)
			app.RequireStart()

			const workers = 16
			var (
				wg      sync.WaitGroup
				done    atomic.Int64
				refused atomic.Int64
			)
			for i := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						call := &loadCall{fanOut: 1 + i%5}
						w.calls.Add(1)
						err := fxcqrs.Exec(context.Background(), w.m, loadCmd{call: call})
						if errors.Is(err, fxcqrs.ErrStopped) && len(call.events) == 0 {
							refused.Add(1) // refused before its handler ran
							return
						}
						w.check(t, call, err)
						done.Add(1)
					}
				}()
			}
			waitUntil(t, "load under way", func() bool { return done.Load() > 50 })
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, app.Stop(stopCtx), "in-flight calls drained within the deadline")
			wg.Wait()
			assert.Equal(t, int64(workers), refused.Load(), "every worker was refused once stopped")
			assert.Zero(t, w.m.Stats().InFlight)
			require.NoError(t, w.m.Stop(context.Background()), "a second Stop is harmless")
		})
	}
}

// TestBackgroundStopUnderLoad: Stop drains every queued background event
// while callers keep coming until they are refused.
func TestBackgroundStopUnderLoad(t *testing.T) {
	t.Parallel()
	var ran, calls atomic.Int64
	m, err := fxcqrs.New(background(4, 16),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(Shipped{}), emit(Shipped{}))),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(context.Context, Shipped) error {
			time.Sleep(50 * time.Microsecond)
			ran.Add(1)
			return nil
		})),
	)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := fxcqrs.Exec(context.Background(), m, PlaceOrder{})
				if errors.Is(err, fxcqrs.ErrStopped) {
					return
				}
				assert.NoError(t, err)
				calls.Add(1)
			}
		}()
	}
	waitUntil(t, "load under way", func() bool { return calls.Load() > 100 })
	require.NoError(t, m.Stop(context.Background()))
	wg.Wait()
	assert.Equal(t, 2*calls.Load(), ran.Load(), "every queued background event ran before Stop returned")
	assert.Zero(t, m.Stats().InFlight)
}

// TestBadInput: every API refuses bad input with a clear error, never a
// panic.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var nilM *fxcqrs.Mediator
	_, err := fxcqrs.Send[Receipt](ctx, nilM, PlaceOrder{})
	assert.EqualError(t, err, "fxcqrs.Send: nil *Mediator")
	assert.EqualError(t, fxcqrs.Exec(ctx, nilM, PlaceOrder{}), "fxcqrs.Exec: nil *Mediator")
	assert.EqualError(t, fxcqrs.Publish(ctx, nilM, Shipped{}), "fxcqrs.Publish: nil *Mediator")
	for _, err := range fxcqrs.Stream[int](ctx, nilM, ListOrders{}) {
		assert.EqualError(t, err, "fxcqrs.Stream: nil *Mediator")
	}

	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(commandFunc[*PlaceOrder](func(context.Context, *PlaceOrder) error { return nil })),
		fxcqrs.WithStreamHandlers(streamFunc[*ListOrders, int](func(context.Context, *ListOrders) func(func(int, error) bool) {
			return func(func(int, error) bool) {}
		})),
	)
	//nolint:staticcheck // a nil context is what is tested
	assert.EqualError(t, fxcqrs.Exec(nil, m, &PlaceOrder{}), "fxcqrs.Exec: nil context")
	//nolint:staticcheck // a nil context is what is tested
	assert.EqualError(t, fxcqrs.Publish(nil, m, Shipped{}), "fxcqrs.Publish: nil context")
	assert.EqualError(t, fxcqrs.Exec(ctx, m, (*PlaceOrder)(nil)), "fxcqrs.Exec: nil *github.com/fxcqrs/fxcqrs_test.PlaceOrder request")
	for _, err := range fxcqrs.Stream[int](ctx, m, (*ListOrders)(nil)) {
		assert.EqualError(t, err, "fxcqrs.Stream: nil *github.com/fxcqrs/fxcqrs_test.ListOrders request")
	}
	// Registered for *PlaceOrder, sent as PlaceOrder.
	err = fxcqrs.Exec(ctx, m, PlaceOrder{})
	require.ErrorIs(t, err, fxcqrs.ErrNoHandler)
	assert.Contains(t, err.Error(), "(*github.com/fxcqrs/fxcqrs_test.PlaceOrder has one: types match exactly)")
	// An event type nobody handles is not an error.
	assert.NoError(t, fxcqrs.Publish(ctx, m, Notified{}))
	assert.Zero(t, m.Stats().InFlight, "refused calls do not stay in flight")
}

// Once Stop's deadline has passed, no new invocation starts, in any mode,
// inline and nested included; each one that did not start is in its call's
// *EventError as not started because the mediator stopped. A call made
// from a handler still running is served: its handler runs, its events are
// reported.
func TestNothingStartsAfterTheStopDeadline(t *testing.T) {
	t.Parallel()
	for name, cfg := range eventModes() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var (
				entered = make(chan struct{})
				release = make(chan struct{})
				ran     atomic.Int32 // event handlers that started
				nested  atomic.Bool  // the nested call's handler ran
			)
			var m *fxcqrs.Mediator // its handlers call it
			m, err := fxcqrs.New(cfg,
				fxcqrs.WithCommandHandlers(
					commandFunc[PlaceOrder](func(ctx context.Context, _ PlaceOrder) error {
						close(entered)
						<-release // Stop's deadline passes meanwhile
						fxcqrs.Emit(ctx, OrderPlaced{ID: 1})
						fxcqrs.Emit(ctx, Shipped{ID: 1})
						// A call from inside a call in flight belongs to it.
						err := fxcqrs.Exec(ctx, m, CancelOrder{ID: 1})
						var evErr *fxcqrs.EventError
						if !errors.As(err, &evErr) || !errors.Is(err, fxcqrs.ErrStopped) {
							return fmt.Errorf("nested call: want its events not started, got %w", err)
						}
						return nil
					}),
					commandFunc[CancelOrder](func(ctx context.Context, _ CancelOrder) error {
						nested.Store(true)
						fxcqrs.Emit(ctx, Audited{ID: 1})
						return nil
					}),
				),
				fxcqrs.WithEventHandlers(
					eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { ran.Add(1); return nil }),
					eventFunc[Shipped](func(context.Context, Shipped) error { ran.Add(1); return nil }),
					eventFunc[Audited](func(context.Context, Audited) error { ran.Add(1); return nil }),
				),
			)
			require.NoError(t, err)

			result := make(chan error, 1)
			go func() { result <- fxcqrs.Exec(context.Background(), m, PlaceOrder{}) }()
			<-entered
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // the deadline has already passed
			require.Error(t, m.Stop(ctx), "a call is still in flight")
			close(release)

			err = <-result
			var evErr *fxcqrs.EventError
			require.ErrorAs(t, err, &evErr, "the call's response is valid; its events are reported")
			require.Len(t, evErr.Failures, 2)
			for _, f := range evErr.Failures {
				assert.False(t, f.Started, f.EventType)
				assert.ErrorIs(t, f.Err, fxcqrs.ErrNotStarted)
				assert.ErrorIs(t, f.Err, fxcqrs.ErrStopped)
			}
			assert.True(t, nested.Load(), "the nested call's handler ran")
			assert.Zero(t, ran.Load(), "no event handler started after the deadline")
			require.NoError(t, m.Stop(context.Background()))
		})
	}
}
