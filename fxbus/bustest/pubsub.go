package bustest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The adapter states its capabilities (fxbus.Broker), consistently on
// its publisher and subscriber, and takes the suite's topics; an adapter
// that says it consumes in parallel consumes under a Flow.
func (s *suite) capabilities(t *testing.T) {
	pub, sub := s.a.Open(t, "a")
	caps, b := capsOf(pub, sub)
	require.NotNil(t, b, "neither the publisher (%T) nor the subscriber (%T) is an fxbus.Broker: the adapter states no capabilities", pub, sub)
	pb, pok := pub.(fxbus.Broker)
	sb, sok := sub.(fxbus.Broker)
	if pok && sok {
		assert.Equal(t, pb.Capabilities(), sb.Capabilities(), "the publisher and the subscriber state different capabilities")
	}
	assert.NotEmpty(t, caps.Name, "Capabilities.Name")
	assert.GreaterOrEqual(t, caps.MaxPayload, 0, "Capabilities.MaxPayload")
	assert.NoError(t, b.CheckTopic(s.topic(t, "name")), "CheckTopic refuses the suite's topics (letters, digits and _)")
	if caps.TopicRule != "" {
		assert.NotEmpty(t, s.a.BadTopic, "the adapter states a topic rule (%q) but Adapter.BadTopic gives no topic that breaks it", caps.TopicRule)
	}
	if caps.Parallel {
		_, ok := sub.(fxbus.FlowSubscriber)
		assert.True(t, ok, "Capabilities.Parallel: the subscriber (%T) must be an fxbus.FlowSubscriber, to know how many messages a subscription takes at once", sub)
	}
	t.Logf("%+v", caps)
}

// One group's one subscriber gets every message, with its id, payload
// and metadata.
func (s *suite) oneGroupGetsAll(t *testing.T) {
	tp := s.topic(t, "one")
	_, sub := s.open(t, "a", tp)
	ch := subscribe(t, sub, tp)
	pub, _ := s.a.Open(t, "p")
	sent := newMessages(20, "one")
	publish(t, pub, tp, sent[:10]...) // ten in one call
	for _, m := range sent[10:] {     // ten in a call each
		publish(t, pub, tp, m)
	}
	got := receive(t, ch, len(sent), true)
	want := map[string]*message.Message{}
	for _, m := range sent {
		want[m.UUID] = m
	}
	for _, m := range got {
		w, ok := want[m.UUID]
		if !assert.True(t, ok, "received %s, which was not sent, or twice", m.UUID) {
			continue
		}
		delete(want, m.UUID)
		assert.Equal(t, string(w.Payload), string(m.Payload), "payload of %s", m.UUID)
		assert.Equal(t, w.Metadata.Get("bustest"), m.Metadata.Get("bustest"), "metadata of %s", m.UUID)
	}
}

// Two groups (two services) each get every message.
func (s *suite) twoGroupsEachGetAll(t *testing.T) {
	tp := s.topic(t, "two")
	_, subA := s.open(t, "a", tp)
	_, subB := s.open(t, "b", tp)
	chA, chB := subscribe(t, subA, tp), subscribe(t, subB, tp)
	pub, _ := s.a.Open(t, "p")
	sent := newMessages(10, "two")
	publish(t, pub, tp, sent...)
	assert.ElementsMatch(t, ids(sent), ids(receive(t, chA, len(sent), true)), "group a")
	assert.ElementsMatch(t, ids(sent), ids(receive(t, chB, len(sent), true)), "group b")
}

// Two replicas of one group share its messages: each message goes to one
// of them. On an in-process broker, which has no groups, each gets all.
func (s *suite) replicasShare(t *testing.T) {
	tp := s.topic(t, "replicas")
	_, sub1 := s.open(t, "a", tp)
	_, sub2 := s.open(t, "a", tp)
	ch1, ch2 := subscribe(t, sub1, tp), subscribe(t, sub2, tp)
	pub, _ := s.a.Open(t, "p")
	sent := newMessages(40, "replica")
	publish(t, pub, tp, sent...)

	var (
		mu  sync.Mutex
		got = map[string]int{}
		per [2]int
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i, ch := range []<-chan *message.Message{ch1, ch2} {
		wg.Go(func() {
			for {
				select {
				case msg := <-ch:
					if msg == nil {
						return
					}
					msg.Ack()
					mu.Lock()
					got[msg.UUID]++
					per[i]++
					mu.Unlock()
				case <-ctx.Done():
					return
				}
			}
		})
	}
	want := len(sent)
	if s.a.InProcess {
		want = 2 * len(sent)
	}
	done := waitFor(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return per[0]+per[1] >= want
	})
	cancel()
	wg.Wait()
	require.True(t, done, "the replicas received %d and %d of %d messages", per[0], per[1], len(sent))
	for _, m := range sent {
		n := got[m.UUID]
		if s.a.InProcess {
			assert.Equal(t, 2, n, "in process, every subscriber gets %s", m.UUID)
		} else {
			assert.Equal(t, 1, n, "%s: one replica of the group gets it, once", m.UUID)
		}
	}
	t.Logf("replica 1 got %d, replica 2 got %d", per[0], per[1])
}

// Placed is an event of ThroughTheBus, which sends two types on one
// topic.
type Placed struct{ ID int }

// Lost is the other event of ThroughTheBus.
type Lost struct{ ID int }

// place is ThroughTheBus's command: it emits a Placed and a Lost.
type place struct{ ID int }

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

// An application routes two event types to one topic and another
// consumes both over the adapter: each is decoded by its name on the
// wire, and its correlation id crosses.
func (s *suite) throughTheBus(t *testing.T) {
	tp := s.topic(t, "bus")
	cpub, csub := s.open(t, "a", tp, tp+"_poison")
	var (
		mu   sync.Mutex
		got  []string
		corr []string // the correlation id each was handled under
	)
	record := func(ctx context.Context, what string) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, what)
		corr = append(corr, fxbus.CorrelationID(ctx))
		return nil
	}
	bus, err := fxbus.New(fxbus.Config{Publisher: cpub, Subscriber: csub}, nil, []fxbus.Subscription{
		fxbus.NewSubscription[Placed](tp, fxbus.Name("bustest.Placed")),
		fxbus.NewSubscription[Lost](tp, fxbus.Name("bustest.Lost")),
	})
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(bus), fxcqrs.WithEventHandlers(
		eventFunc[Placed](func(ctx context.Context, e Placed) error { return record(ctx, fmt.Sprintf("placed %d", e.ID)) }),
		eventFunc[Lost](func(ctx context.Context, e Lost) error { return record(ctx, fmt.Sprintf("lost %d", e.ID)) }),
	))
	require.NoError(t, err)
	require.NoError(t, bus.Start(context.Background(), m))
	t.Cleanup(func() {
		assert.NoError(t, bus.Stop(context.Background()))
		assert.NoError(t, m.Stop(context.Background()))
	})

	ppub, _ := s.a.Open(t, "p")
	pbus, err := fxbus.New(fxbus.Config{Publisher: ppub}, []fxbus.Routing{
		fxbus.NewRoute[Placed](tp, fxbus.Name("bustest.Placed")),
		fxbus.NewRoute[Lost](tp, fxbus.Name("bustest.Lost")),
	}, nil)
	require.NoError(t, err)
	producer, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(pbus), fxcqrs.WithCommandHandlers(
		commandFunc[place](func(ctx context.Context, c place) error {
			fxcqrs.Emit(ctx, Placed(c))
			fxcqrs.Emit(ctx, Lost(c))
			return nil
		})))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, producer.Stop(context.Background())) })
	require.NoError(t, fxcqrs.Exec(context.Background(), producer, place{ID: 5}))

	require.True(t, waitFor(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 2
	}), "the consumer handled %v", got)
	mu.Lock()
	defer mu.Unlock()
	assert.ElementsMatch(t, []string{"placed 5", "lost 5"}, got, "two types on one topic, by their names")
	assert.NotEmpty(t, corr[0], "the correlation id crossed")
	assert.NotEmpty(t, corr[1], "the correlation id crossed")
}

// A BatchPublisher reports how many of a batch, from the first, the
// broker took: all of a good batch; those before the first it refused
// (a payload above the adapter's MaxPayload); none on a topic nobody
// provisioned, when the adapter provisions.
func (s *suite) batchAcks(t *testing.T) {
	tp := s.topic(t, "batch")
	_, sub := s.open(t, "a", tp)
	pub, _ := s.a.Open(t, "p")
	bp, ok := pub.(fxbus.BatchPublisher)
	if !ok {
		t.Logf("the publisher (%T) is not an fxbus.BatchPublisher: a relay publishes one message at a time; nothing to check", pub)
		return
	}
	caps, _ := capsOf(pub, sub)
	ch := subscribe(t, sub, tp)

	sent := newMessages(10, "batch")
	acked, err := bp.PublishBatch(tp, sent)
	require.NoError(t, err)
	require.Equal(t, len(sent), acked, "a batch the broker takes whole is acknowledged whole")
	assert.ElementsMatch(t, ids(sent), ids(receive(t, ch, len(sent), true)))

	if caps.MaxPayload > 0 {
		second := newMessages(5, "prefix")
		second[2].Payload = make([]byte, caps.MaxPayload+1)
		acked, err = bp.PublishBatch(tp, second)
		require.Error(t, err, "a batch with a message above MaxPayload (%d bytes) at index 2", caps.MaxPayload)
		assert.Contains(t, err.Error(), fmt.Sprint(caps.MaxPayload), "the error names the limit")
		assert.Equal(t, 2, acked, "the acknowledged prefix is the two messages before the refused one: %v", err)
		// The prefix arrives; those after the refused one may have been
		// taken too, as the contract allows.
		var seen []string
		require.True(t, waitFor(func() bool {
			select {
			case msg := <-ch:
				msg.Ack()
				seen = append(seen, msg.UUID)
			default:
			}
			return slices.Contains(seen, second[0].UUID) && slices.Contains(seen, second[1].UUID)
		}), "the acknowledged prefix arrives: got %v", seen)
		assert.NotContains(t, seen, second[2].UUID, "the refused message arrived")
	} else {
		t.Log("the adapter states no MaxPayload: no refused message in the middle of a batch to check")
	}

	if provisioner(pub, sub) != nil {
		unknown := s.topic(t, "batchunknown")
		acked, err = bp.PublishBatch(unknown, newMessages(3, "unknown"))
		require.Error(t, err, "a batch to a topic nobody provisioned")
		assert.Contains(t, err.Error(), unknown, "the error names the topic")
		assert.Zero(t, acked, "nothing of a batch to a topic nobody provisioned is acknowledged")
	}
}
