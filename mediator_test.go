package fxcqrs_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSend(t *testing.T) {
	t.Parallel()

	t.Run("returns the response after its events", func(t *testing.T) {
		t.Parallel()
		var handled atomic.Int32
		m := newMediator(t, fxcqrs.Config{},
			fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](func(ctx context.Context, c PlaceOrder) (Receipt, error) {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID + 1})
				return Receipt{ID: c.ID}, nil
			})),
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error {
				handled.Add(1)
				return nil
			})),
		)
		got, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 7})
		require.NoError(t, err)
		assert.Equal(t, Receipt{ID: 7}, got)
		assert.Equal(t, int32(2), handled.Load(), "both events ran before Send returned")
	})

	t.Run("handler error discards its events", func(t *testing.T) {
		t.Parallel()
		errBoom := errors.New("boom")
		var handled atomic.Int32
		m := newMediator(t, fxcqrs.Config{},
			fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](func(ctx context.Context, c PlaceOrder) (Receipt, error) {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				return Receipt{ID: 1}, errBoom
			})),
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error {
				handled.Add(1)
				return nil
			})),
		)
		got, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 7})
		assert.Same(t, errBoom, err, "the handler's error comes back unchanged")
		assert.Zero(t, got)
		assert.Zero(t, handled.Load())
	})

	t.Run("no handler", func(t *testing.T) {
		t.Parallel()
		m := newMediator(t, fxcqrs.Config{})
		_, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{})
		require.ErrorIs(t, err, fxcqrs.ErrNoHandler)
		assert.Contains(t, err.Error(), "github.com/fxcqrs/fxcqrs_test.PlaceOrder")
	})

	t.Run("pointer and value are different types", func(t *testing.T) {
		t.Parallel()
		m := newMediator(t, fxcqrs.Config{}, fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](
			func(context.Context, PlaceOrder) (Receipt, error) { return Receipt{}, nil })))
		_, err := fxcqrs.Send[Receipt](context.Background(), m, &PlaceOrder{})
		require.ErrorIs(t, err, fxcqrs.ErrNoHandler)
		assert.Contains(t, err.Error(), "*github.com/fxcqrs/fxcqrs_test.PlaceOrder")
		assert.Contains(t, err.Error(), "types match exactly")
	})

	t.Run("wrong response type names the real one", func(t *testing.T) {
		t.Parallel()
		m := newMediator(t, fxcqrs.Config{}, fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](
			func(context.Context, PlaceOrder) (Receipt, error) { return Receipt{}, nil })))
		_, err := fxcqrs.Send[string](context.Background(), m, PlaceOrder{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "returns github.com/fxcqrs/fxcqrs_test.Receipt, not string")

		// The typed handler is kept after the first right call; a wrong
		// call after it must still fail, and a right one still succeed.
		_, err = fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{})
		require.NoError(t, err)
		_, err = fxcqrs.Send[string](context.Background(), m, PlaceOrder{})
		assert.ErrorContains(t, err, "not string")
		_, err = fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{})
		assert.NoError(t, err)
	})

	t.Run("command type through Send", func(t *testing.T) {
		t.Parallel()
		m := newMediator(t, fxcqrs.Config{}, fxcqrs.WithCommandHandlers(commandFunc[CancelOrder](
			func(context.Context, CancelOrder) error { return nil })))
		_, err := fxcqrs.Send[Receipt](context.Background(), m, CancelOrder{})
		require.ErrorIs(t, err, fxcqrs.ErrNoHandler)
		assert.Contains(t, err.Error(), "call Exec")
	})

	t.Run("panic becomes PanicError", func(t *testing.T) {
		t.Parallel()
		var handled atomic.Int32
		m := newMediator(t, fxcqrs.Config{},
			fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](func(ctx context.Context, c PlaceOrder) (Receipt, error) {
				fxcqrs.Emit(ctx, OrderPlaced{})
				panic("kaboom")
			})),
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error {
				handled.Add(1)
				return nil
			})),
		)
		_, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{})
		var pe *fxcqrs.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "kaboom", pe.Value)
		assert.Contains(t, string(pe.Stack), "mediator_test.go", "the stack shows where it panicked")
		assert.Zero(t, handled.Load(), "a panicking handler's events are discarded")
	})

	t.Run("nil mediator, context and request", func(t *testing.T) {
		t.Parallel()
		_, err := fxcqrs.Send[Receipt](context.Background(), nil, PlaceOrder{})
		assert.EqualError(t, err, "fxcqrs.Send: nil *Mediator")

		m := newMediator(t, fxcqrs.Config{}, fxcqrs.WithRequestHandlers(requestFunc[*PlaceOrder, Receipt](
			func(_ context.Context, p *PlaceOrder) (Receipt, error) { return Receipt{ID: p.ID}, nil })))
		//nolint:staticcheck // a nil context is what is tested
		_, err = fxcqrs.Send[Receipt](nil, m, &PlaceOrder{})
		assert.EqualError(t, err, "fxcqrs.Send: nil context")

		_, err = fxcqrs.Send[Receipt](context.Background(), m, (*PlaceOrder)(nil))
		assert.EqualError(t, err, "fxcqrs.Send: nil *github.com/fxcqrs/fxcqrs_test.PlaceOrder request")
		assert.Zero(t, m.Stats().InFlight, "a refused call does not stay in flight")
	})
}

func TestExec(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	var handled atomic.Int32
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(commandFunc[CancelOrder](func(ctx context.Context, c CancelOrder) error {
			fxcqrs.Emit(ctx, Shipped{ID: c.ID})
			if c.ID < 0 {
				return errBoom
			}
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(context.Context, Shipped) error {
			handled.Add(1)
			return nil
		})),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, CancelOrder{ID: 1}))
	assert.Equal(t, int32(1), handled.Load())
	assert.Same(t, errBoom, fxcqrs.Exec(context.Background(), m, CancelOrder{ID: -1}))
	assert.Equal(t, int32(1), handled.Load())

	err := fxcqrs.Exec(context.Background(), m, PlaceOrder{})
	assert.ErrorIs(t, err, fxcqrs.ErrNoHandler)
}

func TestPublish(t *testing.T) {
	t.Parallel()
	var a, b atomic.Int32
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithEventHandlers(
			eventFunc[Shipped](func(context.Context, Shipped) error { a.Add(1); return nil }),
			eventFunc[Shipped](func(context.Context, Shipped) error { b.Add(1); return nil }),
		),
	)
	require.NoError(t, fxcqrs.Publish(context.Background(), m, Shipped{ID: 1}))
	assert.Equal(t, int32(1), a.Load())
	assert.Equal(t, int32(1), b.Load())
	require.NoError(t, fxcqrs.Publish(context.Background(), m, Audited{}), "an event nobody handles is not an error")
}

func TestEventErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  fxcqrs.Config
	}{
		{"concurrent", limit(2)},
		{"sequential", sequential()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			errSMTP := errors.New("smtp down")
			var ran atomic.Int32
			m := newMediator(t, tc.cfg,
				fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](func(ctx context.Context, c PlaceOrder) (Receipt, error) {
					fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
					fxcqrs.Emit(ctx, Shipped{ID: c.ID})
					fxcqrs.Emit(ctx, Audited{ID: c.ID})
					return Receipt{ID: c.ID}, nil
				})),
				fxcqrs.WithEventHandlers(
					eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { ran.Add(1); return errSMTP }),
					eventFunc[Shipped](func(context.Context, Shipped) error { ran.Add(1); panic("shipping exploded") }),
					eventFunc[Audited](func(context.Context, Audited) error { ran.Add(1); return nil }),
				),
			)
			got, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 3})
			assert.Equal(t, Receipt{ID: 3}, got, "the response is valid beside event failures")
			assert.Equal(t, int32(3), ran.Load(), "every invocation ran despite failures")

			var evErr *fxcqrs.EventError
			require.ErrorAs(t, err, &evErr)
			require.Len(t, evErr.Failures, 2)
			byType := map[string]fxcqrs.EventFailure{}
			for _, f := range evErr.Failures {
				byType[f.EventType] = f
			}
			placed := byType["github.com/fxcqrs/fxcqrs_test.OrderPlaced"]
			assert.Same(t, errSMTP, placed.Err)
			assert.True(t, placed.Started)
			assert.Equal(t, OrderPlaced{ID: 3}, placed.Event)
			assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.eventFunc[github.com/fxcqrs/fxcqrs_test.OrderPlaced]", placed.Handler)

			shipped := byType["github.com/fxcqrs/fxcqrs_test.Shipped"]
			var pe *fxcqrs.PanicError
			require.ErrorAs(t, shipped.Err, &pe)
			assert.Equal(t, "shipping exploded", pe.Value)

			assert.ErrorIs(t, err, errSMTP, "EventError unwraps to each failure")
			assert.Contains(t, err.Error(), "2 event handlers failed")
			assert.Contains(t, err.Error(), "smtp down")
		})
	}
}

func TestNotReady(t *testing.T) {
	t.Parallel()
	// Under fx the mediator exists before its handlers are registered; a
	// call then must not be mistaken for a missing handler.
	m := fxcqrs.NewUnregisteredForTest(t)
	_, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{})
	require.ErrorIs(t, err, fxcqrs.ErrNotReady)
	assert.NotErrorIs(t, err, fxcqrs.ErrNoHandler)
}
