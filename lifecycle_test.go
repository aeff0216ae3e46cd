package fxcqrs_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// TestStopDrainsInFlight uses fx's real Stop: it waits for the in-flight
// call and its events; meanwhile new calls are refused while calls made
// from inside the in-flight one are served.
func TestStopDrainsInFlight(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	release := make(chan struct{})
	var nestedErr atomic.Value
	var audited atomic.Int32
	var m *fxcqrs.Mediator
	app := fxtest.New(t,
		fxcqrs.Module,
		fx.Supply(limit(2)),
		fxcqrs.AsRequestHandler(func() requestFunc[PlaceOrder, Receipt] {
			return func(ctx context.Context, c PlaceOrder) (Receipt, error) {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				return Receipt{ID: c.ID}, nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(ctx context.Context, e OrderPlaced) error {
				close(entered)
				<-release
				// The mediator is stopping now; this call belongs to an
				// in-flight one and must be served.
				err := fxcqrs.Exec(ctx, m, CancelOrder{ID: e.ID})
				nestedErr.Store(errBox{err})
				return err
			}
		}),
		fxcqrs.AsCommandHandler(func() commandFunc[CancelOrder] {
			return func(ctx context.Context, _ CancelOrder) error {
				fxcqrs.Emit(ctx, Audited{})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Audited] {
			return func(context.Context, Audited) error { audited.Add(1); return nil }
		}),
		fx.Populate(&m),
	)
	app.RequireStart()

	sent := make(chan error, 1)
	go func() {
		_, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 1})
		sent <- err
	}()
	<-entered

	stopped := make(chan error, 1)
	go func() { stopped <- app.Stop(context.Background()) }()

	waitUntil(t, "new calls refused", func() bool {
		return fxcqrs.Publish(context.Background(), m, Notified{}) != nil
	})
	_, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 3})
	require.ErrorIs(t, err, fxcqrs.ErrStopped)
	select {
	case <-stopped:
		t.Fatal("Stop returned while a call was in flight")
	default:
	}

	close(release)
	require.NoError(t, <-sent)
	require.NoError(t, <-stopped)
	assert.Equal(t, errBox{}, nestedErr.Load(), "the nested call was served during stop")
	assert.Equal(t, int32(1), audited.Load())
	assert.Zero(t, m.Stats().InFlight)

	require.NoError(t, m.Stop(context.Background()), "a second Stop is harmless")
	err = fxcqrs.Exec(context.Background(), m, CancelOrder{})
	assert.ErrorIs(t, err, fxcqrs.ErrStopped)
	for _, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{}) {
		assert.ErrorIs(t, err, fxcqrs.ErrStopped, "Stream is refused when iteration starts")
	}
}

type errBox struct{ err error }

// TestStopDeadlineReports: what cannot finish by the deadline is reported,
// and queued invocations are reported to their calls, not run.
func TestStopDeadlineReports(t *testing.T) {
	t.Parallel()
	g := newGauge()
	release := make(chan struct{})
	var shipped atomic.Int32
	m, err := fxcqrs.New(limit(1),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{}), emit(Shipped{}))),
		fxcqrs.WithEventHandlers(
			blocking[OrderPlaced](g, release),
			eventFunc[Shipped](func(context.Context, Shipped) error { shipped.Add(1); return nil }),
		),
	)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- fxcqrs.Exec(context.Background(), m, PlaceOrder{}) }()
	g.waitFor(t, "the slot taken", func(cur, _, _ int) bool { return cur == 1 })
	waitUntil(t, "the second queued", func() bool { return m.Stats().Events.Waiting == 1 })

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	err = m.Stop(expired)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 calls still in flight")
	assert.ErrorIs(t, err, context.Canceled)

	close(release)
	err = <-done
	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr)
	require.Len(t, evErr.Failures, 1)
	assert.Equal(t, Shipped{}, evErr.Failures[0].Event)
	assert.ErrorIs(t, evErr.Failures[0].Err, fxcqrs.ErrNotStarted)
	assert.ErrorIs(t, evErr.Failures[0].Err, fxcqrs.ErrStopped)
	assert.Zero(t, shipped.Load())

	require.NoError(t, m.Stop(context.Background()), "Stop again waits for what is left")
}

func TestStopIdleMediator(t *testing.T) {
	t.Parallel()
	m, err := fxcqrs.New(fxcqrs.Config{})
	require.NoError(t, err)
	require.NoError(t, m.Start(context.Background()))
	require.NoError(t, m.Stop(context.Background()))
	require.NoError(t, m.Stop(context.Background()))
	require.ErrorIs(t, fxcqrs.Publish(context.Background(), m, Shipped{}), fxcqrs.ErrStopped)
}
