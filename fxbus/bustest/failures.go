package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// A nacked message comes back, with its id, payload and metadata.
func (s *suite) nackRedelivers(t *testing.T) {
	tp := s.topic(t, "nack")
	_, sub := s.open(t, group(tp, "a"), tp)
	ch := subscribe(t, sub, tp)
	pub, _ := s.a.Open(t, group(tp, "p"))
	sent := newMessages(1, "nack")[0]
	publish(t, pub, tp, sent)
	first := receive(t, ch, 1, false)[0]
	require.Equal(t, sent.UUID, first.UUID)
	first.Nack()
	again := receive(t, ch, 1, true)[0]
	assert.Equal(t, sent.UUID, again.UUID, "the nacked message comes back")
	assert.Equal(t, string(sent.Payload), string(again.Payload))
	assert.Equal(t, sent.Metadata.Get("bustest"), again.Metadata.Get("bustest"))
}

// A replica whose mediator is stopping nacks what it receives, and then
// stops; the group's other replica handles everything: nothing is lost,
// nothing dead-lettered. (While the stopping replica runs, a broker that
// gives a nacked message back to the consumer that nacked it, as Redis
// Streams and Kafka do, may keep it there: it reaches the other replica
// once the stopping one is gone.)
func (s *suite) stoppingReplica(t *testing.T) {
	tp := s.topic(t, "stopping")
	_, deadSub := s.open(t, group(tp, "dead"), tp+"_poison")
	dead := subscribe(t, deadSub, tp+"_poison")

	// Replica 1: consuming, but its mediator has stopped.
	pub1, sub1 := s.open(t, group(tp, "a"), tp, tp+"_poison")
	stopped, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(eventFunc[Keyed](func(context.Context, Keyed) error {
		t.Error("a stopped mediator ran a handler")
		return nil
	})))
	require.NoError(t, err)
	require.NoError(t, stopped.Stop(context.Background()))
	counted := &countingSubscriber{Subscriber: sub1}
	bus1, err := fxbus.New(fxbus.Config{Publisher: pub1, Subscriber: counted, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}, nil, []fxbus.Subscription{fxbus.NewSubscription[Keyed](tp, fxbus.Name(keyedName))})
	require.NoError(t, err)
	require.NoError(t, bus1.Start(context.Background(), stopped))
	var stopOnce sync.Once
	stop1 := func() {
		stopOnce.Do(func() {
			assert.NoError(t, bus1.Stop(context.Background()))
			assert.NoError(t, sub1.Close())
			assert.NoError(t, pub1.Close())
		})
	}
	t.Cleanup(stop1)

	// Replica 2: healthy.
	pub2, sub2 := s.open(t, group(tp, "a"), tp, tp+"_poison")
	var (
		mu      sync.Mutex
		handled = map[int]bool{}
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(handled)
	}
	consume(t, pub2, sub2, tp, consumerConfig{}, func(_ context.Context, e Keyed) error {
		mu.Lock()
		handled[e.Seq] = true
		mu.Unlock()
		return nil
	})

	pub, _ := s.a.Open(t, group(tp, "p"))
	const n = 20
	for i := range n {
		publish(t, pub, tp, keyedMessage("", i))
	}
	require.True(t, waitFor(func() bool { return counted.n.Load() > 0 || count() == n }), "neither replica received anything")
	t.Logf("the stopping replica received %d, the healthy one handled %d, before the stopping one stopped", counted.n.Load(), count())
	stop1()
	var deadLettered []string
	handledAll := waitFor(func() bool {
		select {
		case msg := <-dead:
			msg.Ack()
			deadLettered = append(deadLettered, msg.UUID+": "+msg.Metadata.Get(middleware.ReasonForPoisonedKey))
		default:
		}
		return count() == n
	})
	assert.Empty(t, deadLettered, "dead-lettered")
	require.True(t, handledAll, "the healthy replica handled %d of %d", count(), n)
	select {
	case msg := <-dead:
		t.Fatalf("a message was dead-lettered: %s", msg.Metadata.Get(middleware.ReasonForPoisonedKey))
	default:
	}
}

// countingSubscriber counts the messages it hands out.
type countingSubscriber struct {
	message.Subscriber
	n atomic.Int64
}

func (c *countingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := c.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for msg := range in {
			c.n.Add(1)
			select {
			case out <- msg:
			case <-ctx.Done():
				msg.Nack()
			}
		}
	}()
	return out, nil
}

// Closing a subscriber while it delivers: Close returns, the channel
// closes, acknowledging or nacking a message it handed over does not
// panic, and what it handed over or held unacknowledged comes back to the
// group's next subscriber.
func (s *suite) closeSubscriber(t *testing.T) {
	tp := s.topic(t, "close")
	_, sub := s.open(t, group(tp, "a"), tp)
	ch := subscribe(t, sub, tp)
	pub, _ := s.a.Open(t, group(tp, "p"))
	sent := newMessages(20, "close")
	publish(t, pub, tp, sent...)
	acked := map[string]bool{}
	for _, m := range receive(t, ch, 1, true) {
		acked[m.UUID] = true
	}
	for _, m := range receive(t, ch, 1, true) {
		acked[m.UUID] = true
	}
	// Held, neither acknowledged nor nacked: one, or three from an
	// adapter that hands over several before an ack.
	caps, _ := capsOf(pub, sub)
	hold := 1
	if caps.Parallel {
		hold = 3
	}
	held := receive(t, ch, hold, false)

	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	// Until the channel closes, what comes is nacked, as the bus does
	// with what it reads after its subscription ended.
	timeout := time.After(deadline)
	for open := true; open; {
		select {
		case msg, ok := <-ch:
			if !ok {
				open = false
				continue
			}
			msg.Nack()
		case <-timeout:
			t.Fatalf("the subscription's channel did not close within %v of Close", deadline)
		}
	}
	select {
	case err := <-closed:
		assert.NoError(t, err, "Close")
	case <-timeout:
		t.Fatalf("Close did not return within %v", deadline)
	}
	for _, m := range held {
		m.Nack() // after Close: no panic
	}
	_, again := s.open(t, group(tp, "a"), tp)
	ch2 := subscribe(t, again, tp)
	want := map[string]bool{}
	for _, m := range sent {
		if !acked[m.UUID] {
			want[m.UUID] = true
		}
	}
	timeout = time.After(deadline)
	for len(want) > 0 {
		select {
		case msg := <-ch2:
			msg.Ack()
			delete(want, msg.UUID)
		case <-timeout:
			t.Fatalf("%d messages not acknowledged before Close did not come back: %v", len(want), want)
		}
	}
}

// Stopping a bus with messages in flight loses none: the replica being
// stopped finishes the message it is handling, and what it had received
// but not handled goes back to the broker, which redelivers it to the
// other replica. Every message is handled at least once.
func (s *suite) busStop(t *testing.T) {
	tp := s.topic(t, "busstop")
	var (
		mu      sync.Mutex
		handled = map[int]bool{}
	)
	record := func(seq int) {
		mu.Lock()
		handled[seq] = true
		mu.Unlock()
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	pub1, sub1 := s.open(t, group(tp, "a"), tp, tp+"_poison")
	c1 := consume(t, pub1, sub1, tp, consumerConfig{}, func(_ context.Context, e Keyed) error {
		once.Do(func() { close(entered); <-release })
		record(e.Seq)
		return nil
	})
	pub2, sub2 := s.open(t, group(tp, "a"), tp, tp+"_poison")
	// Replica 2 handles nothing before replica 1 is in the middle of a
	// message: left free, its workers could take all 30 before replica 1
	// was scheduled at all (it did, under load); held, they take no more
	// than its InFlight, and the rest wait for replica 1. Its InFlight is
	// 4: the default (4 × the mediator's 16 event handlers) holds all 30,
	// and then replica 1 had none to handle (it did, once, in CI).
	consume(t, pub2, sub2, tp, consumerConfig{inFlight: 4}, func(ctx context.Context, e Keyed) error {
		select {
		case <-entered:
		case <-ctx.Done():
			return ctx.Err()
		}
		record(e.Seq)
		return nil
	})

	pub, _ := s.a.Open(t, group(tp, "p"))
	const n = 30
	for i := range n {
		publish(t, pub, tp, keyedMessage("", i))
	}
	select {
	case <-entered: // replica 1 is in the middle of a message
	case <-time.After(deadline):
		t.Fatal("replica 1 handled nothing")
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); c1.stop(t) }()
	close(release)
	<-stopped
	require.True(t, waitFor(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == n
	}), "handled %d of %d by one replica or the other", len(handled), n)
}

// A message whose handler fails for good goes to the topic's dead letter
// topic (by default the topic followed by "_poison"), with its id,
// payload, metadata, the reason and the topic it failed on.
func (s *suite) deadLetter(t *testing.T) {
	tp := s.topic(t, "poisoned")
	_, deadSub := s.open(t, group(tp, "dead"), tp+"_poison")
	dead := subscribe(t, deadSub, tp+"_poison")
	pub, sub := s.open(t, group(tp, "a"), tp, tp+"_poison")
	var calls atomic.Int32
	consume(t, pub, sub, tp, consumerConfig{retry: fxbus.RetryPolicy{MaxRetries: 1, InitialInterval: time.Millisecond}}, func(context.Context, Keyed) error {
		calls.Add(1)
		return errors.New("ledger rejects it")
	})
	producer, _ := s.a.Open(t, group(tp, "p"))
	sent := keyedMessage("k", 9)
	sent.Metadata.Set("bustest", "kept")
	publish(t, producer, tp, sent)

	msg := receive(t, dead, 1, true)[0]
	assert.Equal(t, sent.UUID, msg.UUID, "the dead letter keeps the message's id")
	assert.JSONEq(t, string(sent.Payload), string(msg.Payload))
	assert.Equal(t, keyedName, msg.Metadata.Get(fxbus.MetadataName))
	assert.Equal(t, "k", msg.Metadata.Get(fxbus.MetadataKey))
	assert.Equal(t, "kept", msg.Metadata.Get("bustest"))
	assert.Contains(t, msg.Metadata.Get(middleware.ReasonForPoisonedKey), "ledger rejects it")
	assert.Equal(t, tp, msg.Metadata.Get(middleware.PoisonedTopicKey))
	assert.Equal(t, int32(2), calls.Load(), "the first attempt and one retry")
}

// A message published again with its id and the replay mark
// (fxbus.MetadataReplay, as a repair replays a dead letter) is delivered
// again, with its id and the mark: a broker that drops duplicates by id
// does not drop a replay.
func (s *suite) replayMark(t *testing.T) {
	tp := s.topic(t, "replay")
	_, sub := s.open(t, group(tp, "a"), tp)
	ch := subscribe(t, sub, tp)
	pub, _ := s.a.Open(t, group(tp, "p"))
	orig := newMessages(1, "replay")[0]
	publish(t, pub, tp, orig)
	require.Equal(t, orig.UUID, receive(t, ch, 1, true)[0].UUID)

	replay := message.NewMessage(orig.UUID, orig.Payload)
	for k, v := range orig.Metadata {
		replay.Metadata.Set(k, v)
	}
	replay.Metadata.Set(fxbus.MetadataReplay, "1")
	publish(t, pub, tp, replay)
	got := receive(t, ch, 1, true)[0]
	assert.Equal(t, orig.UUID, got.UUID, "a replay keeps the message's id")
	assert.Equal(t, "1", got.Metadata.Get(fxbus.MetadataReplay), "and carries the mark")
	assert.Equal(t, string(orig.Payload), string(got.Payload))
}

// A payload up to the adapter's MaxPayload is published and delivered
// whole; a larger one fails with an error naming the limit. An adapter
// that states no limit takes a few MB. A limit above largestSent is
// checked at largestSent, and one byte above it.
func (s *suite) largePayload(t *testing.T) {
	tp := s.topic(t, "large")
	_, sub := s.open(t, group(tp, "a"), tp)
	ch := subscribe(t, sub, tp)
	pub, _ := s.a.Open(t, group(tp, "p"))
	caps, _ := capsOf(pub, sub)
	size := caps.MaxPayload
	switch {
	case size == 0:
		size = 4 << 20
		t.Logf("the adapter states no MaxPayload: %d bytes must go through", size)
	case size > largestSent:
		size = largestSent
		t.Logf("the adapter's MaxPayload (%d bytes) is above what the suite sends: %d bytes must go through", caps.MaxPayload, size)
	}
	large := keyedMessage("large", 1)
	large.Payload = bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	require.NoError(t, pub.Publish(tp, large), "a payload of %d bytes (MaxPayload %d)", size, caps.MaxPayload)
	got := receive(t, ch, 1, true)[0]
	assert.Equal(t, large.UUID, got.UUID)
	assert.True(t, bytes.Equal(large.Payload, got.Payload), "the payload arrived whole: %d bytes of %d", len(got.Payload), size)

	if caps.MaxPayload > 0 {
		above := keyedMessage("large", 2)
		above.Payload = make([]byte, caps.MaxPayload+1)
		err := pub.Publish(tp, above)
		require.Error(t, err, "a payload of MaxPayload+1 (%d) bytes", caps.MaxPayload+1)
		assert.Contains(t, err.Error(), fmt.Sprint(caps.MaxPayload), "the error names the limit")
	}
}

// A publish to a topic nobody provisioned fails naming the topic when
// the adapter provisions (fxbus.Provisioner); otherwise the case says
// what the adapter does.
func (s *suite) unknownTopic(t *testing.T) {
	tp := s.topic(t, "unknown")
	pub, sub := s.a.Open(t, group(tp, "p"))
	err := pub.Publish(tp, newMessages(1, "unknown")...)
	if provisioner(pub, sub) == nil {
		t.Logf("the adapter is not an fxbus.Provisioner: a publish to a topic nobody provisioned returned %v", err)
		return
	}
	require.Error(t, err, "a publish to a topic nobody provisioned")
	assert.Contains(t, err.Error(), tp, "the error names the topic")
}

// A topic that breaks the adapter's rule is refused where it is
// declared: CheckTopic, and fxbus.New with a route, a subscription or a
// dead letter topic on it, each naming the topic and the rule. An adapter
// with no rule takes any topic; one without an Adapter.BadTopic refuses
// the empty topic, naming its rule.
func (s *suite) topicRule(t *testing.T) {
	pub, sub := s.a.Open(t, "a")
	caps, b := capsOf(pub, sub)
	require.NotNil(t, b, "the adapter states no capabilities (fxbus.Broker): no topic rule to check")
	good := s.topic(t, "rule")
	if caps.TopicRule == "" {
		for _, tp := range []string{"orders.placed", "orders-placed", "Orders_Placed_2"} {
			assert.NoError(t, b.CheckTopic(tp), "the adapter states no topic rule, and refuses %q", tp)
		}
		return
	}
	bad := s.a.BadTopic
	if bad == "" {
		err := b.CheckTopic("")
		require.Error(t, err, "CheckTopic of the empty topic")
		assert.Contains(t, err.Error(), caps.TopicRule, "CheckTopic's error names the rule")
		t.Log("Adapter.BadTopic is not given: only the empty topic is checked")
		return
	}
	err := b.CheckTopic(bad)
	require.Error(t, err, "CheckTopic(%q)", bad)
	assert.Contains(t, err.Error(), bad, "CheckTopic's error names the topic")
	assert.Contains(t, err.Error(), caps.TopicRule, "CheckTopic's error names the rule")

	cfg := fxbus.Config{Publisher: pub, Subscriber: sub}
	for name, declare := range map[string]func() error{
		"a route": func() error {
			_, err := fxbus.New(cfg, []fxbus.Routing{fxbus.NewRoute[Keyed](bad)}, nil)
			return err
		},
		"a subscription": func() error {
			_, err := fxbus.New(cfg, nil, []fxbus.Subscription{fxbus.NewSubscription[Keyed](bad)})
			return err
		},
		"a dead letter topic": func() error {
			_, err := fxbus.New(cfg, nil, []fxbus.Subscription{fxbus.NewSubscription[Keyed](good, fxbus.DeadLetter(bad))})
			return err
		},
	} {
		err := declare()
		if assert.Error(t, err, "fxbus.New with %s on %q", name, bad) {
			assert.Contains(t, err.Error(), bad, "fxbus.New with %s: the error names the topic", name)
			assert.Contains(t, err.Error(), caps.TopicRule, "fxbus.New with %s: the error names the rule", name)
		}
	}
	_, err = fxbus.New(cfg, []fxbus.Routing{fxbus.NewRoute[Keyed](good)}, []fxbus.Subscription{fxbus.NewSubscription[Keyed](good)})
	assert.NoError(t, err, "fxbus.New with a route and a subscription on a topic the rule takes")
}

// largestSent is the largest payload the suite sends: a test on a shared
// machine does not move hundreds of MB.
const largestSent = 16 << 20

// The adapter's constructor, against an address where nothing listens,
// fails naming the address.
func (s *suite) unreachable(t *testing.T) {
	if s.a.Unreachable == nil {
		t.Log("Adapter.Unreachable is not given: nothing checked")
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // now nothing listens there
	err = s.a.Unreachable(t, addr)
	require.Error(t, err, "the constructor against %s, where nothing listens", addr)
	assert.Contains(t, err.Error(), addr, "the error names the address")
}
