package bustest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Adapter is a broker adapter under test: how to open it, and what the
// suite needs to know of it beside what it states itself
// (fxbus.Capabilities).
type Adapter struct {
	// Open returns a publisher and a subscriber on the broker for one
	// consumer group (replicas of one service share a group); called
	// again to model a restart or another replica. Register cleanup with
	// t.Cleanup. Required.
	//
	// The suite's groups are named after the case's topic (see Groups).
	Open func(t testing.TB, group string) (message.Publisher, message.Subscriber)
	// Forget deletes what the broker keeps of topics (optional). The
	// suite calls it when a case ends, with the case's topics and their
	// dead letter topics.
	Forget func(t testing.TB, topics ...string)

	// BadTopic is a topic the adapter's CheckTopic refuses, such as
	// "payments.confirmed" where a topic names a NATS stream. Without it,
	// an adapter that states a Capabilities.TopicRule is checked to
	// refuse the empty topic only, naming its rule.
	BadTopic string
	// Unreachable makes the adapter as its constructor would against a
	// broker at addr ("127.0.0.1:port", where nothing listens) and
	// returns the constructor's error, which must name addr. Optional:
	// without it the case says that nothing was checked.
	Unreachable func(t testing.TB, addr string) error
	// Abandon cuts the connections of a publisher and subscriber that
	// Open returned, without acknowledging or nacking what they hold, as
	// a killed process's are (see Severable), for the case
	// OrderAcrossRestart/Abandon. Optional: without it that case says
	// that the adapter cannot model a crash.
	Abandon func(t testing.TB, pub message.Publisher, sub message.Subscriber)
	// Pending names the cases (as Run names them, such as "InOrder" or
	// "PublishSubscribe/ReplicasShare"; a case's name covers its
	// subcases) that the adapter does not pass yet, each with the reason
	// and its issue: Run skips them with "pending: " and the reason. Set
	// FXCQRS_BUSTEST_PENDING=run to run them anyway. A name that is no
	// case fails the suite.
	Pending map[string]string
}

// Groups returns the consumer groups the suite opens the adapter with on
// topic, one of the suite's topics or its dead letter topic, for an
// Adapter.Forget that must name what it deletes by group (a RabbitMQ
// queue per topic and group). Each case has groups of its own, as each
// is a service of its own: a case's replicas and restarts share a group,
// and what a broker keeps per group (a consumer name under a lease, say)
// is not shared with the cases that run beside it.
func Groups(topic string) []string {
	base := strings.TrimSuffix(topic, "_poison")
	return []string{group(base, "a"), group(base, "b"), group(base, "dead"), group(base, "p")}
}

// group is the consumer group name of the case whose topic is tp.
func group(tp, name string) string { return tp + "_" + name }

// deadline bounds every wait of the suite: generous, because the
// brokers run on a loaded machine; it only stops a broken case.
const deadline = 90 * time.Second

// cases are the suite's case names, for Adapter.Pending.
var cases = []string{
	"Capabilities",
	"PublishSubscribe", "PublishSubscribe/OneGroupGetsAll", "PublishSubscribe/TwoGroupsEachGetAll",
	"PublishSubscribe/ReplicasShare", "PublishSubscribe/ThroughTheBus",
	"BatchAcks",
	"Redelivery", "Redelivery/Nack", "Redelivery/StoppingReplica",
	"InFlight", "InFlight/Bus", "InFlight/Adapter",
	"InOrder",
	"OrderAcrossRestart", "OrderAcrossRestart/Close", "OrderAcrossRestart/Abandon",
	"CloseWhileDelivering", "CloseWhileDelivering/Subscriber", "CloseWhileDelivering/BusStop",
	"DeadLetter", "ReplayMark", "Expiry",
	"LargePayload",
	"UnknownTopic",
	"TopicRule",
	"Unreachable",
}

// suite is one Run or Bench of an Adapter.
type suite struct {
	a    Adapter
	root string // the name of Run's test: cases are named below it
}

// Run runs every case of the suite against a, as subtests named after
// the cases. Each case reads the adapter's stated capabilities from the
// publisher and subscriber Open returns (fxbus.Broker) and checks them:
// a capability the adapter does not state is not skipped, its weaker
// promise is checked instead.
func Run(t *testing.T, a Adapter) {
	t.Helper()
	require.NotNil(t, a.Open, "bustest.Adapter.Open is required")
	for name := range a.Pending {
		if !slices.Contains(cases, name) {
			t.Fatalf("bustest: Adapter.Pending names %q, which is no case of the suite: one of %s", name, strings.Join(cases, ", "))
		}
	}
	s := &suite{a: a, root: t.Name()}
	s.run(t, "Capabilities", s.capabilities)
	s.run(t, "PublishSubscribe", func(t *testing.T) {
		s.run(t, "OneGroupGetsAll", s.oneGroupGetsAll)
		s.run(t, "TwoGroupsEachGetAll", s.twoGroupsEachGetAll)
		s.run(t, "ReplicasShare", s.replicasShare)
		s.run(t, "ThroughTheBus", s.throughTheBus)
	})
	s.run(t, "BatchAcks", s.batchAcks)
	s.run(t, "Redelivery", func(t *testing.T) {
		s.run(t, "Nack", s.nackRedelivers)
		s.run(t, "StoppingReplica", s.stoppingReplica)
	})
	s.run(t, "InFlight", func(t *testing.T) {
		s.run(t, "Bus", s.inFlightBus)
		s.run(t, "Adapter", s.inFlightAdapter)
	})
	s.run(t, "InOrder", s.inOrder)
	s.run(t, "OrderAcrossRestart", func(t *testing.T) {
		s.run(t, "Close", func(t *testing.T) { s.orderAcrossRestart(t, false) })
		s.run(t, "Abandon", func(t *testing.T) { s.orderAcrossRestart(t, true) })
	})
	s.run(t, "CloseWhileDelivering", func(t *testing.T) {
		s.run(t, "Subscriber", s.closeSubscriber)
		s.run(t, "BusStop", s.busStop)
	})
	s.run(t, "DeadLetter", s.deadLetter)
	s.run(t, "ReplayMark", s.replayMark)
	s.run(t, "Expiry", s.expiry)
	s.run(t, "LargePayload", s.largePayload)
	s.run(t, "UnknownTopic", s.unknownTopic)
	s.run(t, "TopicRule", s.topicRule)
	s.run(t, "Unreachable", s.unreachable)
}

// run runs the case name as a parallel subtest, or skips it when the
// adapter lists it as pending.
func (s *suite) run(t *testing.T, name string, test func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		path := strings.TrimPrefix(t.Name(), s.root+"/")
		if reason, ok := s.a.Pending[path]; ok && os.Getenv("FXCQRS_BUSTEST_PENDING") != "run" {
			t.Skip("pending: " + reason)
		}
		test(t)
	})
}

// topic returns a topic of the case's own, which every broker takes
// (letters, digits and _), forgotten when the case ends with its dead
// letter topic.
func (s *suite) topic(t testing.TB, base string) string {
	t.Helper()
	tp := fmt.Sprintf("bustest_%s_%x", base, rand.Uint64())
	if s.a.Forget != nil {
		t.Cleanup(func() { s.a.Forget(t, tp, tp+"_poison") })
	}
	return tp
}

// capsOf returns what the adapter states of itself: the subscriber's
// capabilities, or the publisher's, and whether either states any.
func capsOf(pub message.Publisher, sub message.Subscriber) (fxbus.Capabilities, fxbus.Broker) {
	if b, ok := sub.(fxbus.Broker); ok {
		return b.Capabilities(), b
	}
	if b, ok := pub.(fxbus.Broker); ok {
		return b.Capabilities(), b
	}
	return fxbus.Capabilities{}, nil
}

// provisioner returns the Provisioner among pub and sub, or nil.
func provisioner(pub message.Publisher, sub message.Subscriber) fxbus.Provisioner {
	if p, ok := sub.(fxbus.Provisioner); ok {
		return p
	}
	if p, ok := pub.(fxbus.Provisioner); ok {
		return p
	}
	return nil
}

// open opens the adapter for group and provisions topics on it for the
// group to consume, as the bus does at start, when it is a Provisioner.
func (s *suite) open(t testing.TB, group string, topics ...string) (message.Publisher, message.Subscriber) {
	t.Helper()
	pub, sub := s.a.Open(t, group)
	if p := provisioner(pub, sub); p != nil && len(topics) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		if cp, ok := p.(fxbus.ConsumerProvisioner); ok {
			require.NoError(t, cp.ProvisionConsumer(ctx, topics...), "provision %v for group %s to consume", topics, group)
		} else {
			require.NoError(t, p.Provision(ctx, topics...), "provision %v for group %s", topics, group)
		}
	}
	return pub, sub
}

// subscribe subscribes sub to topic until the case ends.
func subscribe(t testing.TB, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err, "subscribe to %s", topic)
	return ch
}

// receive waits for n messages on ch and acknowledges each when ack is
// set.
func receive(t testing.TB, ch <-chan *message.Message, n int, ack bool) []*message.Message {
	t.Helper()
	var got []*message.Message
	timeout := time.After(deadline)
	for len(got) < n {
		select {
		case msg, ok := <-ch:
			if !ok {
				t.Fatalf("the subscription closed after %d of %d messages", len(got), n)
			}
			if ack {
				msg.Ack()
			}
			got = append(got, msg)
		case <-timeout:
			t.Fatalf("waited %v for %d messages, got %d", deadline, n, len(got))
		}
	}
	return got
}

// newMessages returns n messages with their own ids, payloads and a
// metadata entry each.
func newMessages(n int, label string) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(fmt.Sprintf("%s-%d-%x", label, i, rand.Uint32()), fmt.Appendf(nil, `{"n":%d}`, i))
		msgs[i].Metadata.Set("bustest", fmt.Sprintf("%s %d", label, i))
	}
	return msgs
}

func ids(msgs []*message.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.UUID
	}
	return out
}

// waitFor waits until cond holds, checking it each time wake says
// something changed and at least every few milliseconds, for at most the
// suite's deadline; it reports whether cond held.
func waitFor(cond func() bool) bool {
	timeout := time.After(deadline)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			return cond()
		}
	}
	return true
}

// Keyed is the event the suite's subscriptions consume: the Seq'th
// message of Key.
type Keyed struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
}

// keyedName is Keyed's name on the wire.
const keyedName = "bustest.Keyed"

// keyedMessage is the message of the Seq'th event of key, as a route
// with KeyBy would publish it.
func keyedMessage(key string, seq int) *message.Message {
	msg := message.NewMessage(fmt.Sprintf("%s-%d-%x", key, seq, rand.Uint32()), fmt.Appendf(nil, `{"key":%q,"seq":%d}`, key, seq))
	msg.Metadata.Set(fxbus.MetadataName, keyedName)
	msg.Metadata.Set(fxbus.MetadataContentType, "application/json")
	if key != "" {
		msg.Metadata.Set(fxbus.MetadataKey, key)
	}
	return msg
}

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// consumer is a service that consumes one topic through an fxbus.Bus,
// as an application does.
type consumer struct {
	bus  *fxbus.Bus
	m    *fxcqrs.Mediator
	once sync.Once
}

// consumerConfig is what a consumer's subscription asks for.
type consumerConfig struct {
	inFlight int // the subscription's InFlight; 0: the default
	inOrder  bool
	retry    fxbus.RetryPolicy
	handlers int              // the mediator's event handlers at once; default 16
	now      func() time.Time // the bus's clock; default time.Now
}

// consume starts a consumer of topic over pub and sub, its handler h,
// stopped when the case ends unless stopped before.
func consume(t testing.TB, pub message.Publisher, sub message.Subscriber, topic string, cfg consumerConfig, h func(ctx context.Context, e Keyed) error) *consumer {
	t.Helper()
	opts := []fxbus.SubscribeOption{fxbus.Name(keyedName), fxbus.Retry(cfg.retry)}
	if cfg.inFlight > 0 {
		opts = append(opts, fxbus.InFlight(cfg.inFlight))
	}
	if cfg.inOrder {
		opts = append(opts, fxbus.InOrder())
	}
	if cfg.handlers == 0 {
		cfg.handlers = 16
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	bus, err := fxbus.New(fxbus.Config{Publisher: pub, Subscriber: sub, Logger: log, Now: cfg.now},
		nil, []fxbus.Subscription{fxbus.NewSubscription[Keyed](topic, opts...)})
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: cfg.handlers}},
		fxcqrs.WithEventHandlers(eventFunc[Keyed](h)), fxcqrs.WithForwarder(bus), fxcqrs.WithLogger(log))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	require.NoError(t, bus.Start(ctx, m), "start consuming %s", topic)
	c := &consumer{bus: bus, m: m}
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop stops consuming, then the mediator, once.
func (c *consumer) stop(t testing.TB) {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		if err := c.bus.Stop(ctx); err != nil {
			t.Errorf("stop the bus: %v", err)
		}
		if err := c.m.Stop(ctx); err != nil {
			t.Errorf("stop the mediator: %v", err)
		}
	})
}

// publish publishes msgs to topic, in calls of at most 100 messages.
func publish(t testing.TB, pub message.Publisher, topic string, msgs ...*message.Message) {
	t.Helper()
	for chunk := range slices.Chunk(msgs, 100) {
		require.NoError(t, pub.Publish(topic, chunk...), "publish to %s", topic)
	}
}
