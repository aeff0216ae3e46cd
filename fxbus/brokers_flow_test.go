package fxbus_test

import (
	"context"
	"errors"
	"fmt"
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
)

// Every route option, over each real broker: a concrete route, a renamed
// one, an interface route whose topic carries two event types; the
// correlation id crosses from one service to the other and back.
func TestBrokerRoundTrip(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, b broker) {
		placed, paid, audit := topic(t, "orders"), topic(t, "payments"), topic(t, "audit")
		t.Cleanup(func() { b.forget(t, placed, paid, audit, placed+"_poison", paid+"_poison", audit+"_poison") })

		billedPub, billedSub := b.open(t, "b")
		billed := newInbox[OrderPlaced]()
		service(t, billedPub, billedSub,
			fxbus.Subscribe[OrderPlaced](placed),
			fxbus.Route[OrderPaid](paid, fxbus.Name("billing.order_paid")),
			fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
				return func(ctx context.Context, e OrderPlaced) error {
					billed.add(e)
					fxcqrs.Emit(ctx, OrderPaid{ID: e.ID})
					return nil
				}
			}),
		)

		// The audit service reads two event types from one topic.
		auditPub, auditSub := b.open(t, "c")
		audited := newInbox[string]()
		service(t, auditPub, auditSub,
			fxbus.Subscribe[OrderPlaced](audit),
			fxbus.Subscribe[ShipmentLost](audit),
			fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
				return func(_ context.Context, e OrderPlaced) error { audited.add(fmt.Sprintf("placed %d", e.ID)); return nil }
			}),
			fxcqrs.AsEventHandler(func() eventFunc[ShipmentLost] {
				return func(_ context.Context, e ShipmentLost) error { audited.add(fmt.Sprintf("lost %d", e.ID)); return nil }
			}),
		)

		ordersPub, ordersSub := b.open(t, "a")
		paidBack := newInbox[string]()
		orders := service(t, ordersPub, ordersSub,
			fxbus.Route[OrderPlaced](placed),
			fxbus.Route[DomainEvent](audit),
			fxbus.Subscribe[OrderPaid](paid, fxbus.Name("billing.order_paid")),
			fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
				return func(ctx context.Context, c PlaceOrder) error {
					fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID, Label: "keyboard"})
					fxcqrs.Emit(ctx, ShipmentLost{ID: c.ID})
					return nil
				}
			}),
			fxcqrs.AsEventHandler(func() eventFunc[OrderPaid] {
				return func(ctx context.Context, e OrderPaid) error {
					paidBack.add(fmt.Sprintf("%d %s", e.ID, fxbus.CorrelationID(ctx)))
					return nil
				}
			}),
		)

		require.NoError(t, fxcqrs.Exec(context.Background(), orders, PlaceOrder{ID: 5}))
		assert.Equal(t, []OrderPlaced{{ID: 5, Label: "keyboard"}}, billed.wait(t, 1))
		assert.ElementsMatch(t, []string{"placed 5", "lost 5"}, audited.wait(t, 2), "two types on one topic, by name")
		back := paidBack.wait(t, 1)[0]
		assert.Regexp(t, `^5 [0-9a-f-]{36}$`, back, "OrderPaid came back, renamed on both sides, with the chain's correlation id")
	})
}

// A message whose handlers keep failing lands in the dead letter with its
// reason, after the retries; the broker is not asked to redeliver it.
func TestBrokerDeadLetter(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, b broker) {
		tp := topic(t, "poisoned")
		t.Cleanup(func() { b.forget(t, tp, tp+"_poison") })
		pub, sub := b.open(t, "a")
		_, deadSub := b.open(t, "dead")
		dead := deadLetters(t, deadSub, tp+"_poison")
		var calls atomic.Int32
		service(t, pub, sub,
			fxbus.Subscribe[OrderPlaced](tp, fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 2, InitialInterval: time.Millisecond})),
			fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
				return func(context.Context, OrderPlaced) error { calls.Add(1); return errors.New("ledger rejects it") }
			}),
		)
		producer, _ := b.open(t, "p")
		m := newProducer(t, producer, tp)
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 9}))
		msg := drain(t, dead, 1)[0]
		assert.Contains(t, msg.Metadata.Get(middleware.ReasonForPoisonedKey), "ledger rejects it")
		assert.Equal(t, "OrderPlaced", msg.Metadata.Get(fxbus.MetadataName))
		assert.JSONEq(t, `{"id":9,"label":""}`, string(msg.Payload))
		assert.Equal(t, int32(3), calls.Load())
	})
}

// newProducer is a service that only routes OrderPlaced to topic, emitted
// by PlaceOrder.
func newProducer(t *testing.T, pub message.Publisher, tp string) *fxcqrs.Mediator {
	t.Helper()
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
		fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
		return nil
	})), fxcqrs.WithForwarder(mustBus(t, fxbus.Config{Publisher: pub}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced](tp)}, nil)))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	return m
}

func mustBus(t *testing.T, cfg fxbus.Config, routes []fxbus.Routing, subs []fxbus.Subscription) *fxbus.Bus {
	t.Helper()
	b, err := fxbus.New(cfg, routes, subs)
	require.NoError(t, err)
	return b
}

// A replica whose mediator is stopping nacks what it receives, and the
// broker redelivers it to another replica of the group: nothing is lost,
// nothing dead-lettered. The replica that stops in the middle of a flow
// loses nothing either: each message is handled by one replica or the
// other, at least once.
func TestBrokerStoppingReplicaRedelivers(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, b broker) {
		tp := topic(t, "orders")
		t.Cleanup(func() { b.forget(t, tp, tp+"_poison") })
		b.prepare(t, tp, "a")
		_, deadSub := b.open(t, "dead")
		dead := deadLetters(t, deadSub, tp+"_poison")

		// Replica 1: consuming, but its mediator has stopped.
		pub1, sub1 := b.open(t, "a")
		stopped, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error {
			t.Error("a stopped mediator ran a handler")
			return nil
		})))
		require.NoError(t, err)
		require.NoError(t, stopped.Stop(context.Background()))
		counted := &countingSubscriber{Subscriber: sub1}
		bus1 := mustBus(t, fxbus.Config{Publisher: pub1, Subscriber: counted}, nil, []fxbus.Subscription{fxbus.NewSubscription[OrderPlaced](tp)})
		require.NoError(t, bus1.Start(context.Background(), stopped))
		t.Cleanup(func() { require.NoError(t, bus1.Stop(context.Background())) })

		// Replica 2: healthy, and slow enough that replica 1 gets its share.
		pub2, sub2 := b.open(t, "a")
		var (
			mu      sync.Mutex
			handled = map[int]int{}
		)
		got := newInbox[int]()
		service(t, pub2, sub2,
			fxbus.Subscribe[OrderPlaced](tp),
			fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
				return func(_ context.Context, e OrderPlaced) error {
					mu.Lock()
					handled[e.ID]++
					first := handled[e.ID] == 1
					mu.Unlock()
					if first {
						got.add(e.ID)
					}
					return nil
				}
			}),
		)

		producer, _ := b.open(t, "p")
		m := newProducer(t, producer, tp)
		const n = 20
		for i := range n {
			require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: i}))
		}
		assert.ElementsMatch(t, seq(n), got.wait(t, n), "every message reached the healthy replica")
		assert.NotZero(t, counted.n.Load(), "the stopping replica received some, and gave them back")
		select {
		case msg := <-dead:
			t.Fatalf("a message was dead-lettered: %s", msg.Metadata.Get(middleware.ReasonForPoisonedKey))
		default:
		}
	})
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
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
				return
			}
		}
	}()
	return out, nil
}

// Stop with messages in flight loses none: the replica being stopped
// finishes the message it is handling, and what it had received but not
// handled goes back to the broker, which redelivers it to the other
// replica. Every message is handled at least once.
func TestBrokerStopWithMessagesInFlight(t *testing.T) {
	t.Parallel()
	forEachBroker(t, func(t *testing.T, b broker) {
		tp := topic(t, "orders")
		t.Cleanup(func() { b.forget(t, tp, tp+"_poison") })
		b.prepare(t, tp, "a")
		var (
			mu      sync.Mutex
			handled = map[int]int{}
		)
		got := newInbox[int]()
		record := func(id int) {
			mu.Lock()
			handled[id]++
			first := handled[id] == 1
			mu.Unlock()
			if first {
				got.add(id)
			}
		}
		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		pub1, sub1 := b.open(t, "a")
		var m1 *fxcqrs.Mediator
		app1 := fxtestApp(t, pub1, sub1, &m1,
			fxbus.Subscribe[OrderPlaced](tp),
			fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
				return func(_ context.Context, e OrderPlaced) error {
					once.Do(func() { close(entered); <-release })
					record(e.ID)
					return nil
				}
			}),
		)
		pub2, sub2 := b.open(t, "a")
		service(t, pub2, sub2,
			fxbus.Subscribe[OrderPlaced](tp),
			fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
				return func(_ context.Context, e OrderPlaced) error { record(e.ID); return nil }
			}),
		)
		producer, _ := b.open(t, "p")
		m := newProducer(t, producer, tp)
		const n = 30
		for i := range n {
			require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: i}))
		}
		<-entered // replica 1 is in the middle of a message
		stopped := make(chan error, 1)
		go func() { stopped <- app1.Stop(context.Background()) }()
		close(release)
		require.NoError(t, <-stopped)
		assert.ElementsMatch(t, seq(n), got.wait(t, n), "every message was handled by one replica or the other")
	})
}
