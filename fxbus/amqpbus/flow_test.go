package amqpbus_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newPubSub(t testing.TB, cfg amqpbus.Config) *amqpbus.PubSub {
	t.Helper()
	ps, err := amqpbus.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close()) })
	return ps
}

func keyed(id, key string) *message.Message {
	m := message.NewMessage(id, []byte(id))
	m.Metadata.Set(fxbus.MetadataKey, key)
	return m
}

// A message watermill-amqp published (what a deployment's queues hold
// when it upgrades) is read with its id and metadata.
func TestReadsWatermillAMQPMessages(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "billing")
	ps := newPubSub(t, amqpbus.Config{URL: addr, Group: "billing"})
	require.NoError(t, ps.ProvisionConsumer(context.Background(), tp))
	old, err := wamqp.NewPublisher(wamqp.NewDurablePubSubConfig(addr, wamqp.GenerateQueueNameTopicNameWithSuffix("billing")), watermill.NopLogger{})
	require.NoError(t, err)
	m := message.NewMessage("old-1", []byte(`{"a":1}`))
	m.Metadata.Set("name", "OrderPlaced")
	m.Metadata.Set(fxbus.MetadataKey, "k1")
	require.NoError(t, old.Publish(tp, m))
	require.NoError(t, old.Close())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 4, InOrder: true})
	require.NoError(t, err)
	got := next(t, ch)
	assert.Equal(t, "old-1", got.UUID)
	assert.Equal(t, `{"a":1}`, string(got.Payload))
	assert.Equal(t, message.Metadata{"name": "OrderPlaced", fxbus.MetadataKey: "k1"}, got.Metadata)
	got.Ack()
}

// A message above MaxPayload fails to publish, naming the limit.
func TestPublishAboveMaxPayloadFails(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "billing")
	ps := newPubSub(t, amqpbus.Config{URL: addr, MaxPayload: 1000})
	require.NoError(t, ps.ProvisionConsumer(context.Background(), tp))
	assert.Equal(t, 1000, ps.Capabilities().MaxPayload)
	err := ps.Publish(tp, message.NewMessage("big", make([]byte, 1001)))
	require.ErrorContains(t, err, "max_message_size of 1000")
	def := newPubSub(t, amqpbus.Config{URL: addr})
	assert.GreaterOrEqual(t, def.Capabilities().MaxPayload, 16<<20)
}

func TestCheckTopic(t *testing.T) {
	t.Parallel()
	ps := newPubSub(t, amqpbus.Config{URL: amqpURL(t), Group: "billing"})
	require.NoError(t, ps.CheckTopic("payments.confirmed"))
	require.NoError(t, ps.CheckTopic(strings.Repeat("a", 255-len("_billing"))))
	for _, bad := range []string{"", "amq.x", "a b", strings.Repeat("a", 255-len("_billing")+1)} {
		err := ps.CheckTopic(bad)
		require.Error(t, err, bad)
		assert.ErrorContains(t, err, fmt.Sprintf("%q", bad))
		assert.ErrorContains(t, err, "not starting with")
	}
}

// Messages a subscription held when it ended (handed over and not
// acknowledged, or not handed over yet) come back first, in the queue's
// order, to the next subscription: after a clean stop and after the
// connection dies (a killed process).
func TestRestartKeepsOrder(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "billing")
	ps := newPubSub(t, amqpbus.Config{URL: addr, Group: "billing"})
	require.NoError(t, ps.ProvisionConsumer(context.Background(), tp))
	var msgs []*message.Message
	for i := range 40 {
		msgs = append(msgs, keyed(fmt.Sprintf("m-%02d", i), "k"+strconv.Itoa(i%2)))
	}
	_, err := ps.PublishBatch(tp, msgs)
	require.NoError(t, err)
	want := map[string]int{"k0": 0, "k1": 1} // each key's next
	done := 0
	check := func(m *message.Message) {
		t.Helper()
		k := m.Metadata.Get(fxbus.MetadataKey)
		require.Equal(t, fmt.Sprintf("m-%02d", want[k]), m.UUID, "key %s", k)
		want[k] += 2
		done++
		m.Ack()
	}
	// A clean stop with two handed over (one per key) and six queued.
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 8, InOrder: true})
	require.NoError(t, err)
	for range 4 {
		check(next(t, ch))
	}
	held := []*message.Message{next(t, ch), next(t, ch)}
	cancel()
	for _, m := range held {
		m.Nack()
	}
	for range ch {
		// drained until it closes
	}
	// A killed consumer: its connection dies with what it held.
	killed := newPubSub(t, amqpbus.Config{URL: addr, Group: "billing"})
	ch, err = killed.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 8, InOrder: true})
	require.NoError(t, err)
	for range 4 {
		check(next(t, ch))
	}
	_ = next(t, ch) // handed over, never settled
	require.NoError(t, killed.Close())

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	ch, err = ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 8, InOrder: true})
	require.NoError(t, err)
	for done < 40 {
		check(next(t, ch))
	}
}
