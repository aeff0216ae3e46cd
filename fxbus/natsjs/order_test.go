package natsjs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keyed is message i of key, its payload "key:i".
func keyed(key string, i int) *message.Message {
	m := message.NewMessage(fmt.Sprintf("%s-%d", key, i), fmt.Appendf(nil, "%s:%d", key, i))
	m.Metadata.Set(fxbus.MetadataKey, key)
	return m
}

func publishKeyed(t testing.TB, ps *natsjs.PubSub, tp, key string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		require.NoError(t, ps.Publish(tp, keyed(key, i)))
	}
}

func flowSub(t testing.TB, ps *natsjs.PubSub, tp string, flow fxbus.Flow) (<-chan *message.Message, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := ps.SubscribeFlow(ctx, tp, flow)
	require.NoError(t, err)
	return ch, cancel
}

func consumerInfo(t testing.TB, addr, tp, group string) *nats.ConsumerInfo {
	t.Helper()
	info, err := jetStream(t, addr).ConsumerInfo(natsjs.StreamName(tp), group)
	require.NoError(t, err)
	return info
}

// eventually waits, up to a minute, for cond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition on the server
	}
}

// The subscription holds no more than InFlight messages: JetStream
// counts no more delivered and unacknowledged, however many wait in the
// stream; acknowledging one lets one more come.
func TestHoldsNoMoreThanInFlight(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "bounded")
	ps := pubsub(t, addr, "svc")
	require.NoError(t, ps.Provision(context.Background(), tp))
	for i := range 40 {
		require.NoError(t, ps.Publish(tp, msg(fmt.Sprintf("b-%d", i), "x")))
	}
	ch, _ := flowSub(t, ps, tp, fxbus.Flow{InFlight: 4})
	var held []*message.Message
	for range 4 {
		held = append(held, next(t, ch))
	}
	for range 20 { // a bounded look: the push consumer had all 40 out at once
		info := consumerInfo(t, addr, tp, "svc")
		require.LessOrEqual(t, info.NumAckPending, 4, "delivered and unacknowledged")
		time.Sleep(10 * time.Millisecond)
	}
	held[0].Ack()
	held = append(held[1:], next(t, ch))
	eventually(t, "the ack reaches the server", func() bool { return consumerInfo(t, addr, tp, "svc").AckFloor.Stream >= 1 })
	assert.LessOrEqual(t, consumerInfo(t, addr, tp, "svc").NumAckPending, 4)
	for _, m := range held {
		m.Ack()
	}
}

// A handler that runs longer than AckWait keeps its message: the
// subscription tells JetStream it is in progress, and it is not
// delivered again beside itself.
func TestALongHandlerKeepsItsMessage(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "long")
	ps, err := natsjs.New(natsjs.Config{URL: addr, Group: "svc", AckWait: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close()) })
	ch, _ := flowSub(t, ps, tp, fxbus.Flow{InFlight: 4})
	require.NoError(t, ps.Publish(tp, msg("l-1", "slow")))
	m := next(t, ch)
	start := time.Now()
	for time.Since(start) < 4*time.Second { // four AckWaits of handling
		select {
		case again := <-ch:
			t.Fatalf("delivered again while its handler runs: %s", again.UUID)
		case <-time.After(100 * time.Millisecond):
		}
	}
	info := consumerInfo(t, addr, tp, "svc")
	assert.Zero(t, info.NumRedelivered, "nothing redelivered")
	m.Ack()
}

// With InOrder, a key's nacked message comes back before the key's
// later ones, which were already fetched: none overtakes it; other keys
// go on meanwhile.
func TestANackedMessageIsNotOvertakenByItsKey(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "nacked_key")
	ps := pubsub(t, addr, "svc")
	require.NoError(t, ps.Provision(context.Background(), tp))
	publishKeyed(t, ps, tp, "a", 1, 4)
	publishKeyed(t, ps, tp, "b", 1, 1)
	ch, _ := flowSub(t, ps, tp, fxbus.Flow{InFlight: 8, InOrder: true})
	first := next(t, ch)
	require.Equal(t, "a:1", string(first.Payload))
	other := next(t, ch) // b:1, beside a:1; a:2 waits behind a:1
	require.Equal(t, "b:1", string(other.Payload))
	other.Ack()
	first.Nack()
	publishKeyed(t, ps, tp, "a", 5, 6) // published after the nack
	var got []string
	for len(got) < 6 {
		m := next(t, ch)
		got = append(got, string(m.Payload))
		m.Ack()
	}
	assert.Equal(t, []string{"a:1", "a:2", "a:3", "a:4", "a:5", "a:6"}, got)
}

// After a consuming process dies holding messages, the next subscription
// gets them first, in stream order, before the newer messages of their
// key: the consumer is remade from its ack floor. What had been handled
// after the floor comes again (an inbox skips it); nothing is lost.
func TestAfterAKillTheHeldMessagesComeBackFirst(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "killed")
	// A long AckWait: without the remaking, the dead process's messages
	// would come back only after it, behind the newer ones.
	cfg := natsjs.Config{URL: addr, Group: "svc", AckWait: time.Minute}
	dead, err := natsjs.New(cfg)
	require.NoError(t, err)
	require.NoError(t, dead.Provision(context.Background(), tp))
	publishKeyed(t, dead, tp, "a", 1, 10)
	ch, _ := flowSub(t, dead, tp, fxbus.Flow{InFlight: 4})
	next(t, ch).Ack()     // a:1
	next(t, ch).Ack()     // a:2
	third := next(t, ch)  // a:3, held
	fourth := next(t, ch) // a:4, handled, not yet acked
	_ = third
	eventually(t, "the acks reach the server", func() bool { return consumerInfo(t, addr, tp, "svc").AckFloor.Stream == 2 })
	fourth.Ack()
	natsjs.Kill(dead)
	require.NoError(t, dead.Close())

	ps := pubsub(t, addr, "svc")
	publishKeyed(t, ps, tp, "a", 11, 12)
	ch, _ = flowSub(t, ps, tp, fxbus.Flow{InFlight: 4})
	var got []string
	for len(got) < 10 {
		m := next(t, ch)
		got = append(got, string(m.Payload))
		m.Ack()
	}
	assert.Equal(t, []string{"a:3", "a:4", "a:5", "a:6", "a:7", "a:8", "a:9", "a:10", "a:11", "a:12"}, got)
}

// An orderly stop gives back what the subscription held, in stream
// order, once its handlers are done, even when the handler nacked a later
// message first: a replica that consumes meanwhile gets it in order.
//
// The stopping subscription has no pull open (its InFlight is reached):
// NATS 2.9.10 loses a redelivery it takes while the only pulls waiting
// are ones nobody listens to any more (nats-server #5305, fixed in
// 2.10.14), see the package doc.
func TestAnOrderlyStopGivesBackInOrder(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "stopped")
	cfg := natsjs.Config{URL: addr, Group: "svc", AckWait: time.Minute}
	old, err := natsjs.New(cfg)
	require.NoError(t, err)
	require.NoError(t, old.Provision(context.Background(), tp))
	publishKeyed(t, old, tp, "a", 1, 3)
	ch, stop := flowSub(t, old, tp, fxbus.Flow{InFlight: 3})
	first, second, third := next(t, ch), next(t, ch), next(t, ch)

	replica := pubsub(t, addr, "svc")
	rch, _ := flowSub(t, replica, tp, fxbus.Flow{InFlight: 4})
	stop()
	first.Ack()
	third.Nack() // the later one first
	select {
	case m := <-rch:
		t.Fatalf("%s came back before the stop gave back what it held", m.Payload)
	case <-time.After(300 * time.Millisecond): // a bounded look: a nack passed on at once comes back within it
	}
	second.Nack()
	for range ch { // closed: nothing more is handed over
	}
	require.NoError(t, old.Close())
	var got []string
	for len(got) < 2 {
		m := next(t, rch)
		got = append(got, string(m.Payload))
		m.Ack()
	}
	assert.Equal(t, []string{"a:2", "a:3"}, got)
}

// An existing deployment's push consumer (what natsjs made before it
// pulled), with messages delivered and not acknowledged, is moved to the
// pulled shape when the new code subscribes: every message it had not
// acknowledged arrives, in order.
func TestUpgradeFromAPushConsumer(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "upgrade")
	js := jetStream(t, addr)
	_, err := js.AddStream(&nats.StreamConfig{Name: tp, Subjects: []string{tp}})
	require.NoError(t, err)
	_, err = js.AddConsumer(tp, &nats.ConsumerConfig{ // as natsjs made it
		Durable: "svc", DeliverSubject: nats.NewInbox(), DeliverGroup: "svc",
		DeliverPolicy: nats.DeliverAllPolicy, AckPolicy: nats.AckExplicitPolicy,
		AckWait: time.Minute, MaxDeliver: -1,
	})
	require.NoError(t, err)
	for i := 1; i <= 6; i++ {
		_, err := js.Publish(tp, fmt.Appendf(nil, "m:%d", i), nats.MsgId(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	// The old consumer's process: acks m:1 and m:3, holds the rest, ends.
	conn, err := nats.Connect(addr)
	require.NoError(t, err)
	oldJS, err := conn.JetStream()
	require.NoError(t, err)
	got := make(chan *nats.Msg, 16)
	_, err = oldJS.ChanQueueSubscribe(tp, "svc", got, nats.Bind(tp, "svc"), nats.ManualAck())
	require.NoError(t, err)
	for i := 1; i <= 6; i++ {
		select {
		case m := <-got:
			if i == 1 || i == 3 {
				require.NoError(t, m.AckSync())
			}
		case <-time.After(time.Minute):
			t.Fatal("the old consumer delivered nothing")
		}
	}
	conn.Close()

	ps := pubsub(t, addr, "svc")
	ch, _ := flowSub(t, ps, tp, fxbus.Flow{InFlight: 4})
	var payloads []string
	for len(payloads) < 5 {
		m := next(t, ch)
		payloads = append(payloads, string(m.Payload))
		m.Ack()
	}
	assert.Equal(t, []string{"m:2", "m:3", "m:4", "m:5", "m:6"}, payloads, "from the ack floor (m:1): m:3 again, the inbox skips it")
	info := consumerInfo(t, addr, tp, "svc")
	assert.Empty(t, info.Config.DeliverSubject, "a pull consumer now")
}

// A push consumer with nothing pending is moved too: the messages
// published after the new code subscribed arrive.
func TestUpgradeFromAnIdlePushConsumer(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "upgrade_idle")
	js := jetStream(t, addr)
	_, err := js.AddStream(&nats.StreamConfig{Name: tp, Subjects: []string{tp}})
	require.NoError(t, err)
	_, err = js.AddConsumer(tp, &nats.ConsumerConfig{
		Durable: "svc", DeliverSubject: nats.NewInbox(), DeliverGroup: "svc",
		DeliverPolicy: nats.DeliverAllPolicy, AckPolicy: nats.AckExplicitPolicy, MaxDeliver: -1,
	})
	require.NoError(t, err)
	ps := pubsub(t, addr, "svc")
	ch, _ := flowSub(t, ps, tp, fxbus.Flow{InFlight: 4})
	require.NoError(t, ps.Publish(tp, msg("i-1", "after")))
	m := next(t, ch)
	assert.Equal(t, "after", string(m.Payload))
	m.Ack()
}

// A subscription that starts while a replica of its group holds messages
// and pulls none (its InFlight reached) does not remake the consumer
// under it: the replica's acknowledgements are the consumer's, and
// nothing is delivered twice.
func TestNoRemakeUnderALiveReplica(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "live")
	busy := pubsub(t, addr, "svc")
	require.NoError(t, busy.Provision(context.Background(), tp))
	publishKeyed(t, busy, tp, "a", 1, 2)
	ch, _ := flowSub(t, busy, tp, fxbus.Flow{InFlight: 2})
	first, second := next(t, ch), next(t, ch) // its InFlight reached: it pulls nothing
	eventually(t, "the replica's pull ends", func() bool { return consumerInfo(t, addr, tp, "svc").NumWaiting == 0 })
	before := consumerInfo(t, addr, tp, "svc")
	require.Equal(t, 2, before.NumAckPending)

	starting := pubsub(t, addr, "svc")
	sch, _ := flowSub(t, starting, tp, fxbus.Flow{InFlight: 2})
	after := consumerInfo(t, addr, tp, "svc")
	assert.Equal(t, before.Created, after.Created, "the consumer was not remade")
	first.Ack()
	second.Ack()
	eventually(t, "the replica's acks are taken", func() bool { return consumerInfo(t, addr, tp, "svc").AckFloor.Stream == 2 })
	publishKeyed(t, busy, tp, "a", 3, 3)
	var got string
	select {
	case m := <-sch:
		got = string(m.Payload)
		m.Ack()
	case m := <-ch:
		got = string(m.Payload)
		m.Ack()
	case <-time.After(time.Minute):
		t.Fatal("a:3 never came")
	}
	assert.Equal(t, "a:3", got, "nothing delivered twice")
}
