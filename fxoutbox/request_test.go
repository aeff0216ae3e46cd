package fxoutbox_test

import (
	"context"
	"iter"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Lookup is a request.
type Lookup struct{ ID int }

type requestFunc[Q, R any] func(context.Context, Q) (R, error)

func (f requestFunc[Q, R]) Handle(ctx context.Context, q Q) (R, error) { return f(ctx, q) }

// A request's routed event goes through the outbox, written in a
// transaction of its own after the handler returns (the handler has
// none). Before, no unit of work wrote it and no Forwarder took it: it
// was lost.
func TestRequestRoutedEvent(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	var inTx bool
	r := newRig(t, d, fxoutbox.Config{}, fxcqrs.WithRequestHandlers(requestFunc[Lookup, int](func(ctx context.Context, q Lookup) (int, error) {
		inTx = fxoutbox.Tx(ctx) != nil
		fxcqrs.Emit(ctx, OrderPlaced{ID: q.ID})
		return 1, nil
	})))
	out := received(t, r.gc, "orders")
	_, err := fxcqrs.Send[int](context.Background(), r.m, Lookup{ID: 4})
	require.NoError(t, err)
	assert.False(t, inTx, "a request has no transaction without Config.Requests")
	assert.JSONEq(t, `{"ID":4}`, string(next(t, out).Payload))
}

// Quote is a stream request.
type Quote struct{ N int }

type streamFunc[Q, R any] func(context.Context, Q) iter.Seq2[R, error]

func (f streamFunc[Q, R]) Handle(ctx context.Context, q Q) iter.Seq2[R, error] { return f(ctx, q) }

// Under the module, a stream item's routed event goes through the outbox
// (the outbox's Forwarder writes it): it was lost. A command's routed
// event is written once, by its unit of work, not again by the Forwarder.
func TestStreamRoutedEventUnderTheModule(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	out := received(t, gc, "orders")
	var m *fxcqrs.Mediator
	app := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond}}),
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fxbus.Route[OrderPlaced]("orders"),
		fxcqrs.AsStreamHandler(func() streamFunc[Quote, int] {
			return func(ctx context.Context, q Quote) iter.Seq2[int, error] {
				return func(yield func(int, error) bool) {
					for i := range q.N {
						fxcqrs.Emit(ctx, OrderPlaced{ID: 100 + i})
						if !yield(i, nil) {
							return
						}
					}
				}
			}
		}),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced(c))
				return nil
			}
		}),
		fx.Populate(&m),
	)
	app.RequireStart()
	for _, err := range fxcqrs.Stream[int](context.Background(), m, Quote{N: 2}) {
		require.NoError(t, err)
	}
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	var got []string
	for range 3 {
		got = append(got, string(next(t, out).Payload))
	}
	assert.ElementsMatch(t, []string{`{"ID":100}`, `{"ID":101}`, `{"ID":1}`}, got)
	app.RequireStop()
	select {
	case msg := <-out:
		t.Fatalf("published twice: %s", msg.Payload)
	default:
	}
}

// A durable event emitted where no unit of work runs (a stream item) has
// no transaction to be written in: its handlers run from memory, and the
// outbox says so once per type instead of weakening the promise in
// silence.
func TestDurableEventOutsideAUnitOfWorkIsSaid(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	core, logs := observer.New(zapcore.WarnLevel)
	var m *fxcqrs.Mediator
	var ran atomic.Int32
	app := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite}, zap.New(core)),
		fxoutbox.Durable[Shipped](),
		fxcqrs.AsStreamHandler(func() streamFunc[Quote, int] {
			return func(ctx context.Context, q Quote) iter.Seq2[int, error] {
				return func(yield func(int, error) bool) {
					for i := range q.N {
						fxcqrs.Emit(ctx, Shipped{ID: i})
						if !yield(i, nil) {
							return
						}
					}
				}
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Shipped] {
			return func(context.Context, Shipped) error { ran.Add(1); return nil }
		}),
		fx.Populate(&m),
	)
	app.RequireStart()
	for _, err := range fxcqrs.Stream[int](context.Background(), m, Quote{N: 3}) {
		require.NoError(t, err)
	}
	app.RequireStop()
	assert.Equal(t, int32(3), ran.Load(), "run from memory")
	assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"), "not written: there was no transaction")
	assert.Equal(t, 1, logs.FilterMessageSnippet("no unit of work runs").Len(), "said once for the type")
}
