package fxoutbox_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// panicking is a publisher that panics on its first publishes.
type panicking struct {
	message.Publisher
	left atomic.Int32
}

func (p *panicking) Publish(topic string, msgs ...*message.Message) error {
	if p.left.Add(-1) >= 0 {
		panic("the publisher broke")
	}
	return p.Publisher.Publish(topic, msgs...)
}

// A panic on the relay's goroutine does not take the process down: the
// rows wait, and go out once the publisher works.
func TestRelaySurvivesAPanickingPublisher(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	out := received(t, gc, "orders")
	pub := &panicking{Publisher: gc}
	pub.left.Store(2)
	bus, err := fxbus.New(fxbus.Config{Publisher: pub}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders")}, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
		PollInterval: 10 * time.Millisecond, RetryInitial: time.Millisecond, RetryMax: time.Millisecond,
	}}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
			return nil
		})))
	require.NoError(t, err)
	require.NoError(t, o.Start(context.Background()))
	t.Cleanup(func() {
		require.NoError(t, m.Stop(context.Background()))
		require.NoError(t, o.Stop(context.Background()))
	})
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 4}))
	assert.JSONEq(t, `{"ID":4}`, string(next(t, out).Payload))
	assert.Negative(t, pub.left.Load(), "it panicked twice before")
}
