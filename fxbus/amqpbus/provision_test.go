package amqpbus_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

type Shipped struct{ ID int }

// A service that only publishes to a topic makes its exchange and no
// queue of its own, which nobody would read; a service that subscribes
// makes its queue, and one for its dead letters, which keeps them.
func TestBusProvisionsQueuesOnlyForWhatItConsumes(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	ctx := context.Background()
	hasQueue := func(name string) bool {
		conn, err := amqp.Dial(addr)
		require.NoError(t, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(t, err)
		defer ch.Close()
		_, err = ch.QueueDeclarePassive(name, true, false, false, false, nil)
		return err == nil
	}

	tp := topic(t, addr, "shipping")
	t.Cleanup(func() { // the subscriber's dead letters
		if conn, err := amqp.Dial(addr); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(tp+"_poison_billing", false, false, false)
				_ = ch.ExchangeDelete(tp+"_poison", false, false)
			}
			_ = conn.Close()
		}
	})
	publisher, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "shipping"})
	require.NoError(t, err)
	defer publisher.Close()
	bus, err := fxbus.New(fxbus.Config{Publisher: publisher, Subscriber: publisher}, []fxbus.Routing{fxbus.NewRoute[Shipped](tp)}, nil)
	require.NoError(t, err)
	require.NoError(t, bus.Provision(ctx))
	require.False(t, hasQueue(tp+"_shipping"), "a publishing service leaves no queue of its own")

	consumer, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "billing"})
	require.NoError(t, err)
	defer consumer.Close()
	t.Cleanup(func() {
		if conn, err := amqp.Dial(addr); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(tp+"_billing", false, false, false)
			}
			_ = conn.Close()
		}
	})
	bus, err = fxbus.New(fxbus.Config{Publisher: consumer, Subscriber: consumer}, nil, []fxbus.Subscription{fxbus.NewSubscription[Shipped](tp)})
	require.NoError(t, err)
	require.NoError(t, bus.Provision(ctx))
	require.True(t, hasQueue(tp+"_billing"), "a consuming service's queue")
	require.True(t, hasQueue(tp+"_poison_billing"), "and its dead letters' queue")
}
