package amqpbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// amqpURL is the RabbitMQ server the tests use (see brokertest.Address).
func amqpURL(t testing.TB) string {
	return brokertest.Address(t, "FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
}

// topic is an exchange of the test's own; it and group's queue are
// deleted when the test ends.
func topic(t testing.TB, addr, group string) string {
	t.Helper()
	tp := fmt.Sprintf("amqpbus_%d", rand.Uint64())
	t.Cleanup(func() {
		conn, err := amqp.Dial(addr)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(tp+"_"+group, false, false, false)
			_ = ch.ExchangeDelete(tp, false, false)
			_ = ch.Close()
		}
	})
	return tp
}

// What is published after Provision and before the service subscribes
// waits in its queue, confirmed; it then arrives, and a nacked message
// comes again.
func TestProvisionThenPublishThenSubscribe(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "billing")
	ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "billing"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close()) })
	require.NoError(t, ps.Provision(context.Background(), tp))
	m := message.NewMessage("a-1", []byte("early"))
	m.Metadata.Set("name", "OrderPlaced")
	require.NoError(t, ps.Publish(tp, m))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.Subscribe(ctx, tp)
	require.NoError(t, err)
	got := next(t, ch)
	assert.Equal(t, "early", string(got.Payload))
	assert.Equal(t, "OrderPlaced", got.Metadata.Get("name"))
	got.Nack()
	again := next(t, ch)
	assert.Equal(t, "a-1", again.UUID)
	again.Ack()
}

func next(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(time.Minute):
		t.Fatal("no message within a minute")
		return nil
	}
}

// An unreachable server fails New, naming it without its password.
func TestUnreachableFailsNew(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := "amqp://guest:secret@" + l.Addr().String() + "/"
	require.NoError(t, l.Close())
	_, err = amqpbus.New(amqpbus.Config{URL: addr, Group: "billing"})
	require.ErrorContains(t, err, "RabbitMQ at amqp://guest:xxxxx@"+l.Addr().String()+"/ cannot be reached")
	assert.NotContains(t, err.Error(), "secret")
}

// A batch is confirmed as a whole and arrives in order, in the format
// the subscriber reads.
func TestPublishBatch(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "billing")
	ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "billing", Prefetch: 1})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close()) })
	require.NoError(t, ps.Provision(context.Background(), tp))
	var msgs []*message.Message
	for i := range 50 {
		m := message.NewMessage(fmt.Sprintf("b-%d", i), []byte(fmt.Sprint(i)))
		m.Metadata.Set("name", "OrderPlaced")
		msgs = append(msgs, m)
	}
	acked, err := ps.PublishBatch(tp, msgs)
	require.NoError(t, err)
	assert.Equal(t, 50, acked)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.Subscribe(ctx, tp)
	require.NoError(t, err)
	for i := range 50 {
		m := next(t, ch)
		assert.Equal(t, fmt.Sprintf("b-%d", i), m.UUID)
		assert.Equal(t, "OrderPlaced", m.Metadata.Get("name"))
		m.Ack()
	}
}
