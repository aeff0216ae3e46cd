package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeForwarder records what leaves the process, in a shared log with the
// in-process handlers, so that tests see the order.
type fakeForwarder struct {
	rec   *recorder
	types []reflect.Type
	fail  error

	mu    sync.Mutex
	asked map[reflect.Type]int
}

func (f *fakeForwarder) Forwards(t reflect.Type) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.asked == nil {
		f.asked = map[reflect.Type]int{}
	}
	f.asked[t]++
	return slices.Contains(f.types, t)
}

func (f *fakeForwarder) Forward(_ context.Context, events []any) error {
	for _, e := range events {
		f.rec.add(fmt.Sprintf("forward %T", e))
	}
	return f.fail
}

func TestEmitted(t *testing.T) {
	t.Parallel()
	assert.Nil(t, fxcqrs.Emitted(context.Background()), "nil outside a call")

	var fromMiddleware, fromEventHandler []any
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithMiddleware(fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
			out, err := next(ctx)
			fromMiddleware = fxcqrs.Emitted(ctx)
			return out, err
		}), fxcqrs.KindCommand)),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{ID: 1}), emit(Shipped{ID: 1}))),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
				fxcqrs.Emit(ctx, Audited{ID: 1})
				fromEventHandler = fxcqrs.Emitted(ctx)
				return nil
			}),
			eventFunc[Shipped](func(context.Context, Shipped) error { return nil }),
			eventFunc[Audited](func(context.Context, Audited) error { return nil }),
		),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	assert.Equal(t, []any{OrderPlaced{ID: 1}, Shipped{ID: 1}}, fromMiddleware, "the handler's events, in emit order, before they run")
	assert.Equal(t, []any{Audited{ID: 1}}, fromEventHandler, "an invocation's own follow-ups")
}

// Routed events leave after the handler and its middleware chain succeed
// and before in-process handlers run; follow-ups too; Publish's own event
// does not leave again; a failed handler's events never leave.
func TestForwarder(t *testing.T) {
	t.Parallel()
	for name, cfg := range eventModes() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			fwd := &fakeForwarder{rec: rec, types: []reflect.Type{reflect.TypeFor[OrderPlaced](), reflect.TypeFor[Audited]()}}
			errBoom := errors.New("boom")
			m := newMediator(t, cfg,
				fxcqrs.WithForwarder(fwd),
				fxcqrs.WithMiddleware(fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
					out, err := next(ctx)
					rec.add("chain returned")
					return out, err
				}), fxcqrs.KindCommand)),
				fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
					fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
					fxcqrs.Emit(ctx, Shipped{ID: c.ID})
					if c.ID < 0 {
						return errBoom
					}
					return nil
				})),
				fxcqrs.WithEventHandlers(
					eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
						rec.add("handle OrderPlaced")
						fxcqrs.Emit(ctx, Audited{})
						return nil
					}),
					eventFunc[Shipped](func(context.Context, Shipped) error { rec.add("handle Shipped"); return nil }),
					eventFunc[Audited](func(context.Context, Audited) error { rec.add("handle Audited"); return nil }),
				),
			)
			require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
			got := rec.get()
			require.Equal(t, []string{"chain returned", "forward fxcqrs_test.OrderPlaced"}, got[:2], "after the chain, before any in-process handler")
			assert.ElementsMatch(t, []string{"handle OrderPlaced", "handle Shipped", "forward fxcqrs_test.Audited", "handle Audited"}, got[2:])
			assert.Less(t, slices.Index(got, "forward fxcqrs_test.Audited"), slices.Index(got, "handle Audited"), "a follow-up leaves before it runs")

			rec.order = nil
			require.ErrorIs(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: -1}), errBoom)
			assert.Equal(t, []string{"chain returned"}, rec.get(), "a failed handler's events never leave")

			rec.order = nil
			require.NoError(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{ID: 2}))
			assert.ElementsMatch(t, []string{"handle OrderPlaced", "forward fxcqrs_test.Audited", "handle Audited"}, rec.get(),
				"an event from outside does not leave again; its follow-ups do")

			fwd.mu.Lock()
			for typ, n := range fwd.asked {
				assert.Equal(t, 1, n, "Forwards asked once for %v", typ)
			}
			fwd.mu.Unlock()
		})
	}
}

// A failure to forward does not erase the handler's success: the caller
// gets the response together with the forwarder's error, and the events
// still run in-process.
func TestForwarderFailureIsReportedBeside(t *testing.T) {
	t.Parallel()
	errBroker := errors.New("broker down")
	errLedger := errors.New("ledger down")
	rec := &recorder{}
	fwd := &fakeForwarder{rec: rec, types: []reflect.Type{reflect.TypeFor[OrderPlaced](), reflect.TypeFor[Audited]()}, fail: errBroker}
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithForwarder(fwd),
		fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](func(ctx context.Context, c PlaceOrder) (Receipt, error) {
			fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
			return Receipt{ID: c.ID}, nil
		})),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
				fxcqrs.Emit(ctx, Audited{})
				return errLedger
			}),
			eventFunc[Audited](func(context.Context, Audited) error { rec.add("handle Audited"); return nil }),
		),
	)
	res, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 3})
	assert.Equal(t, Receipt{ID: 3}, res, "the response is valid")
	require.ErrorIs(t, err, errBroker)
	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr, "the event handler's failure too")
	assert.ErrorIs(t, evErr, errLedger)
	assert.Equal(t, []string{"forward fxcqrs_test.OrderPlaced"}, rec.get(), "the failed handler's follow-ups were discarded, never forwarded")
	rec.order = nil

	// A follow-up whose forwarding fails still runs in-process.
	m2 := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithForwarder(&fakeForwarder{rec: rec, types: []reflect.Type{reflect.TypeFor[Audited]()}, fail: errBroker}),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error { fxcqrs.Emit(ctx, Audited{}); return nil }),
			eventFunc[Audited](func(context.Context, Audited) error { rec.add("handle Audited"); return nil }),
		),
	)
	err = fxcqrs.Publish(context.Background(), m2, OrderPlaced{})
	require.ErrorIs(t, err, errBroker)
	assert.False(t, errors.As(err, &evErr), "no event handler failed")
	assert.Contains(t, rec.get(), "handle Audited")
}

// In background mode, a follow-up that cannot be forwarded is logged with
// the batch's failures; the BackgroundErrorHandler hears the event
// handlers' failures, and nothing panics.
func TestForwarderFailureInBackground(t *testing.T) {
	t.Parallel()
	errBroker := errors.New("broker down")
	errLedger := errors.New("ledger down")
	heard := make(chan *fxcqrs.EventError, 1)
	m, err := fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{Background: true}},
		fxcqrs.WithForwarder(&fakeForwarder{rec: &recorder{}, types: []reflect.Type{reflect.TypeFor[Audited]()}, fail: errBroker}),
		fxcqrs.WithBackgroundErrorHandler(func(_ context.Context, err *fxcqrs.EventError) { heard <- err }),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error { fxcqrs.Emit(ctx, Audited{}); return nil }),
			eventFunc[Audited](func(context.Context, Audited) error { return errLedger }),
		),
	)
	require.NoError(t, err)
	require.NoError(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{}))
	require.NoError(t, m.Stop(context.Background()))
	evErr := <-heard
	assert.ErrorIs(t, evErr, errLedger)
	assert.NotErrorIs(t, evErr, errBroker, "the handler hears event handler failures; forwarding failures are logged")
}

// Withdraw takes the events of the types it is told out of what the
// mediator processes, in emit order, and leaves the others in theirs:
// neither the Forwarder nor an in-process handler sees a withdrawn one.
func TestWithdraw(t *testing.T) {
	for _, mode := range []struct {
		name string
		cfg  fxcqrs.Config
	}{
		{"parallel", fxcqrs.Config{}},
		{"sequential", fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: true}}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			rec := &recorder{}
			var withdrawn []any
			fwd := &fakeForwarder{rec: rec, types: []reflect.Type{reflect.TypeFor[OrderPlaced](), reflect.TypeFor[Shipped]()}}
			m := newMediator(t, mode.cfg,
				fxcqrs.WithForwarder(fwd),
				fxcqrs.WithMiddleware(fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
					out, err := next(ctx)
					withdrawn = fxcqrs.Withdraw(ctx, func(t reflect.Type) bool { return t == reflect.TypeFor[OrderPlaced]() })
					return out, err
				}), fxcqrs.KindCommand)),
				fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](
					emit(OrderPlaced{ID: 1}), emit(Shipped{ID: 1}), emit(OrderPlaced{ID: 2}), emit(Audited{ID: 1}), emit(Shipped{ID: 2}))),
				fxcqrs.WithEventHandlers(
					eventFunc[OrderPlaced](func(_ context.Context, e OrderPlaced) error { rec.add(fmt.Sprint("placed ", e.ID)); return nil }),
					eventFunc[Shipped](func(_ context.Context, e Shipped) error { rec.add(fmt.Sprint("shipped ", e.ID)); return nil }),
					eventFunc[Audited](func(_ context.Context, e Audited) error { rec.add(fmt.Sprint("audited ", e.ID)); return nil }),
				))
			require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
			assert.Equal(t, []any{OrderPlaced{ID: 1}, OrderPlaced{ID: 2}}, withdrawn)
			got := rec.get()
			assert.Equal(t, []string{"forward fxcqrs_test.Shipped", "forward fxcqrs_test.Shipped"}, got[:2], "the Forwarder sees the kept events only")
			assert.ElementsMatch(t, []string{"shipped 1", "audited 1", "shipped 2"}, got[2:], "no in-process handler of a withdrawn event runs")
			if mode.cfg.Events.Sequential {
				assert.Equal(t, []string{"shipped 1", "audited 1", "shipped 2"}, got[2:], "the kept events keep their order")
			}
		})
	}
	assert.Nil(t, fxcqrs.Withdraw(context.Background(), func(reflect.Type) bool { return true }), "outside a call there is nothing to withdraw")
}

// Withdraw in calls that emitted nothing, at once, writes nothing they
// share (the race detector sees the empty calls' common buffer).
func TestWithdrawFromEmptyCallsAtOnce(t *testing.T) {
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithMiddleware(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
			out, err := next(ctx)
			if got := fxcqrs.Withdraw(ctx, func(reflect.Type) bool { return true }); got != nil {
				return out, fmt.Errorf("withdrew %v from a call that emitted nothing", got)
			}
			return out, err
		})),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(context.Context, PlaceOrder) error { return nil })))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { // the root module supports Go 1.24: no WaitGroup.Go
			defer wg.Done()
			for range 100 {
				assert.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
			}
		}()
	}
	wg.Wait()
}

// MarkForwarded keeps what a call or an invocation emitted from the
// Forwarder, and in-process handlers still run it; the calls and
// invocations that did not mark theirs are forwarded as before.
func TestMarkForwarded(t *testing.T) {
	rec := &recorder{}
	fwd := &fakeForwarder{rec: rec, types: []reflect.Type{reflect.TypeFor[OrderPlaced](), reflect.TypeFor[Shipped]()}}
	m := newMediator(t, fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: true}},
		fxcqrs.WithForwarder(fwd),
		fxcqrs.WithMiddleware(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
			out, err := next(ctx)
			if c, ok := call.Message.(PlaceOrder); (ok && c.ID == 1) || call.Kind == fxcqrs.KindEvent {
				fxcqrs.MarkForwarded(ctx)
			}
			return out, err
		})),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			fxcqrs.Emit(ctx, OrderPlaced(c))
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
			rec.add(fmt.Sprint("placed ", e.ID))
			fxcqrs.Emit(ctx, Shipped(e))
			return nil
		}), eventFunc[Shipped](func(_ context.Context, e Shipped) error {
			rec.add(fmt.Sprint("shipped ", e.ID))
			return nil
		})))
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	assert.Equal(t, []string{"placed 1", "shipped 1"}, rec.get(), "marked: not forwarded, still run in-process; the invocation's follow-up marked too")
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 2}))
	assert.Equal(t, []string{"placed 1", "shipped 1", "forward fxcqrs_test.OrderPlaced", "placed 2", "shipped 2"}, rec.get(), "not marked: forwarded")
}
