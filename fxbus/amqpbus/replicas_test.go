package amqpbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus/amqptest"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// laneTopic is a topic of the test's own with lanes: its exchanges, the
// group's queues and its record of lanes deleted when it ends.
func laneTopic(t *testing.T, addr, group string, lanes int) string {
	t.Helper()
	tp := fmt.Sprintf("amqpbus_lanes_%d", rand.Uint64())
	// snippet:deletetopic
	t.Cleanup(func() { require.NoError(t, amqptest.DeleteTopic(addr, tp, group, lanes)) })
	// end snippet
	return tp
}

// Replicas share a topic's lanes, each lane's queue consumed by one
// replica at a time (brokertest.LanesAcrossReplicas): what a killed one
// held and had not acknowledged went back to the head of its lanes'
// queues, and their next owner gets it first.
func TestLanesAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds; not with -short")
	}
	t.Parallel()
	addr := amqpURL(t)
	tp := laneTopic(t, addr, "svc", 8)
	cfg := amqpbus.Config{URL: addr, Group: "svc", Lanes: 8, Leases: ownership.NewMemory()}
	pub, err := amqpbus.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	require.NoError(t, pub.ProvisionConsumer(context.Background(), tp))
	brokertest.LanesAcrossReplicas(t, brokertest.Replicas{
		Topic: tp, Publish: pub.Publish,
		Start: func(t *testing.T, name string) brokertest.Replica {
			r, _ := newReplica(t, cfg, name)
			return r
		},
	})
}

// newReplica is replica name of cfg's group: a PubSub of its own.
func newReplica(t *testing.T, cfg amqpbus.Config, name string) (brokertest.Replica, *amqpbus.PubSub) {
	t.Helper()
	cfg.Member = name
	ps, err := amqpbus.New(cfg)
	require.NoError(t, err)
	return brokertest.Replica{Subscriber: ps, Kill: func() { amqpbus.Kill(ps) }, Close: ps.Close}, ps
}

// replica is a replica started on a PubSub of its own, which a test
// reaches into (to lose its host, say).
type replica struct {
	*brokertest.Running
	ps *amqpbus.PubSub
}

// startReplica starts replica name of cfg's group on tp, handling into h.
func startReplica(t *testing.T, h *brokertest.Handlings, name string, cfg amqpbus.Config, tp string) *replica {
	t.Helper()
	r, ps := newReplica(t, cfg, name)
	return &replica{Running: brokertest.StartReplica(t, h, name, tp, r), ps: ps}
}

// Every producer and consumer of a topic uses one number of lanes: the
// figure is recorded when a process with lanes provisions the topic, and
// a process with another (one lane included) fails to provision or
// subscribe.
func TestAnotherNumberOfLanesIsRefused(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := laneTopic(t, addr, "svc", 8)
	eight, err := amqpbus.New(amqpbus.Config{URL: addr, Lanes: 8})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, eight.Close()) })
	require.NoError(t, eight.Provision(context.Background(), tp))
	require.NoError(t, eight.Provision(context.Background(), tp), "the same figure again")
	four, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "svc", TopicLanes: map[string]int{tp: 4}, Leases: ownership.NewMemory()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, four.Close()) })
	err = four.ProvisionConsumer(context.Background(), tp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "has 8 lanes")
	_, err = four.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 1, InOrder: true})
	assert.ErrorContains(t, err, "has 8 lanes", "nor does it consume")
	one, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "svc"}) // one lane: not recorded, but checked
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, one.Close()) })
	err = one.Provision(context.Background(), tp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "configured with 1")
	_, err = one.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 1})
	assert.ErrorContains(t, err, "configured with 1")
}

// A consumer of a topic with lanes needs a store for the leases:
// RabbitMQ keeps none.
func TestLanesNeedALeaseStore(t *testing.T) {
	t.Parallel()
	_, err := amqpbus.New(amqpbus.Config{URL: "amqp://127.0.0.1:1/", Group: "svc", TopicLanes: map[string]int{"orders": 4}})
	require.ErrorContains(t, err, "amqpbus: Config.Leases is required")
	_, err = amqpbus.New(amqpbus.Config{URL: "amqp://127.0.0.1:1/", Group: "svc", Lanes: -1})
	require.ErrorContains(t, err, "Config.Lanes must not be negative")
}

// eventually waits, up to a minute, for cond (brokertest.Eventually).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	brokertest.Eventually(t, what, cond)
}

// A keyed message of a topic of lanes goes to its lane's queue
// (fxbus.LaneOf), one without a key to lane 0's, the group's queue on the
// topic; each queue has a single active consumer.
func TestMessagesGoToTheirLanesQueues(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := laneTopic(t, addr, "svc", 4)
	ps := newPubSub(t, amqpbus.Config{URL: addr, Group: "svc", Lanes: 4, Leases: ownership.NewMemory()})
	require.NoError(t, ps.ProvisionConsumer(context.Background(), tp))
	want := map[int]int{0: 1} // by lane: the messages in its queue; one without a key
	unkeyed := message.NewMessage("unkeyed", []byte("{}"))
	require.NoError(t, ps.Publish(tp, unkeyed))
	for k := range 20 {
		key := fmt.Sprintf("key-%d", k)
		m := message.NewMessage(key, []byte("{}"))
		m.Metadata.Set(fxbus.MetadataKey, key)
		require.NoError(t, ps.Publish(tp, m))
		want[fxbus.LaneOf(key, 4)]++
	}
	conn, err := amqp.Dial(addr)
	require.NoError(t, err)
	defer conn.Close()
	for n := range 4 {
		q := tp + "_svc"
		if n > 0 {
			q = fmt.Sprintf("%s._lane.%d_svc", tp, n)
		}
		ch, err := conn.Channel()
		require.NoError(t, err)
		got, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		require.NoError(t, err, "lane %d's queue", n)
		assert.Equal(t, want[n], got.Messages, "messages in lane %d's queue", n)
		// Declared again without x-single-active-consumer, it is refused:
		// the queue has it.
		_, err = ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "classic"})
		assert.ErrorContains(t, err, "x-single-active-consumer", "lane %d's queue", n)
	}
}
