package amqpbus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// declareQueue declares the group's queue on tp, bound to tp's exchange,
// with args, as an operator or an earlier version would have.
func declareQueue(t *testing.T, addr, tp, group string, args amqp.Table) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(tp, "fanout", true, false, false, false, nil))
	_, err = ch.QueueDeclare(tp+"_"+group, true, false, false, false, args)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(tp+"_"+group, "", tp, false, nil))
	return ch
}

// A group's queue that exists as a quorum queue is refused when the
// service provisions or subscribes, saying why and what to do, instead
// of RabbitMQ's bare "inequivalent arg".
func TestQuorumQueueIsRefusedAtStart(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "billing")
	declareQueue(t, addr, tp, "billing", amqp.Table{"x-queue-type": "quorum"})
	ps := newPubSub(t, amqpbus.Config{URL: addr, Group: "billing"})
	want := fmt.Sprintf("queue %s_billing is a quorum queue, and amqpbus consumes classic queues only", tp)

	err := ps.ProvisionConsumer(context.Background(), tp)
	require.ErrorContains(t, err, "amqpbus: provision "+tp+` for "billing": `+want)
	_, err = ps.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 4, InOrder: true})
	require.ErrorContains(t, err, "amqpbus: subscribe to "+tp+` for "billing": `+want)
	var ae *amqp.Error
	require.ErrorAs(t, err, &ae, "RabbitMQ's own error is wrapped")
	assert.Equal(t, amqp.PreconditionFailed, ae.Code)
}

// The queues amqpbus makes are classic, named so (a vhost whose default
// type is quorum does not change them), and a queue an earlier version
// made without a type is taken as it is.
func TestQueuesAreClassic(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	ps := newPubSub(t, amqpbus.Config{URL: addr, Group: "billing"})

	tp := topic(t, addr, "billing")
	require.NoError(t, ps.ProvisionConsumer(context.Background(), tp))
	conn, err := amqp.Dial(addr)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	_, err = ch.QueueDeclare(tp+"_billing", true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.ErrorContains(t, err, "received 'quorum' but current is 'classic'", "amqpbus made a classic queue")

	earlier := topic(t, addr, "billing")
	declareQueue(t, addr, earlier, "billing", nil)
	require.NoError(t, ps.ProvisionConsumer(context.Background(), earlier))
}

// Why quorum queues are refused, as RabbitMQ behaves: a quorum queue
// puts a nacked (requeued) message at its end, behind the newer messages
// already there, where a classic queue puts it back in its place; and it
// drops a message requeued past its delivery limit (RabbitMQ 4 sets one,
// 20, on every quorum queue). InOrder's and the bus's requeues would
// reorder a key's messages and could lose them.
func TestQuorumQueueRequeuesAtTheEnd(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	firstAfterNack := func(args amqp.Table) string {
		tp := topic(t, addr, "g")
		ch := declareQueue(t, addr, tp, "g", args)
		for i := range 4 {
			require.NoError(t, ch.PublishWithContext(context.Background(), "", tp+"_g", false, false, amqp.Publishing{Body: []byte(fmt.Sprint(i))}))
		}
		require.NoError(t, ch.Qos(1, 0, false))
		d, err := ch.Consume(tp+"_g", "", false, false, false, false, nil)
		require.NoError(t, err)
		first := receive(t, d)
		require.Equal(t, "0", string(first.Body))
		require.NoError(t, first.Nack(false, true))
		return string(receive(t, d).Body)
	}
	assert.Equal(t, "0", firstAfterNack(amqp.Table{"x-queue-type": "classic"}), "classic: back in its place")
	assert.Equal(t, "1", firstAfterNack(amqp.Table{"x-queue-type": "quorum"}), "quorum: behind the newer ones")

	tp := topic(t, addr, "g")
	ch := declareQueue(t, addr, tp, "g", amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": 1})
	require.NoError(t, ch.PublishWithContext(context.Background(), "", tp+"_g", false, false, amqp.Publishing{Body: []byte("only")}))
	d, err := ch.Consume(tp+"_g", "", false, false, false, false, nil)
	require.NoError(t, err)
	for range 2 { // delivered, requeued, delivered again, requeued past the limit
		require.NoError(t, receive(t, d).Nack(false, true))
	}
	select {
	case m := <-d:
		t.Fatalf("%s came again past the delivery limit", m.Body)
	case <-time.After(500 * time.Millisecond): // the absence of a delivery: a bounded wait
	}
	q, err := ch.QueueDeclarePassive(tp+"_g", true, false, false, false, amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": 1})
	require.NoError(t, err)
	assert.Zero(t, q.Messages, "dropped")
}

func receive(t *testing.T, d <-chan amqp.Delivery) amqp.Delivery {
	t.Helper()
	select {
	case m := <-d:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
		return amqp.Delivery{}
	}
}
