package fxbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// Moved is a keyed event of the order tests: the Seq'th move of Key.
type Moved struct {
	Key string
	Seq int
}

// keyOrder records, per key, the sequence numbers in the order handlers
// got them, and how many handlers ran at once.
type keyOrder struct {
	mu      sync.Mutex
	seen    map[string][]int
	running atomic.Int64
	most    atomic.Int64
	total   atomic.Int64
}

func newKeyOrder() *keyOrder { return &keyOrder{seen: map[string][]int{}} }

func (o *keyOrder) handle(e Moved) {
	n := o.running.Add(1)
	defer o.running.Add(-1)
	for {
		m := o.most.Load()
		if n <= m || o.most.CompareAndSwap(m, n) {
			break
		}
	}
	// Some work, of a random length, so that a later message of a key
	// would overtake an earlier one if nothing kept them in order.
	time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
	o.mu.Lock()
	o.seen[e.Key] = append(o.seen[e.Key], e.Seq)
	o.mu.Unlock()
	o.total.Add(1)
}

// check asserts that every key's first deliveries came in order, from
// the first to the last, none missing (a broker's redelivery may repeat
// an earlier one; the inbox would skip it).
func (o *keyOrder) check(t *testing.T, keys, perKey int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	require.Len(t, o.seen, keys)
	for k, seqs := range o.seen {
		want := 0
		for _, s := range seqs {
			if s < want {
				continue // delivered again (after its ack was late): the inbox skips it
			}
			require.Equal(t, want, s, "key %s: got %v", k, seqs)
			want++
		}
		require.Equal(t, perKey, want, "key %s: got %v", k, seqs)
	}
}

// InOrder keeps each key's messages in their order, over each broker,
// while the keys run in parallel within InFlight.
func TestInOrderKeepsEachKeysOrder(t *testing.T) {
	t.Parallel()
	const keys, perKey = 4, 60 // a key every 4 messages: several of one key in flight at once
	run := func(t *testing.T, b broker, parallel bool) {
		tp := topic(t, "moves")
		b.prepare(t, tp, "a")
		t.Cleanup(func() { b.forget(t, tp, tp+"_poison") })
		got := newKeyOrder()
		pub, sub := b.open(t, "a")
		service(t, pub, sub,
			fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}}),
			fxbus.Subscribe[Moved](tp, fxbus.InOrder(), fxbus.InFlight(16)),
			fxcqrs.AsEventHandler(func() eventFunc[Moved] {
				return func(_ context.Context, e Moved) error { got.handle(e); return nil }
			}),
		)
		prodPub, _ := b.open(t, "p")
		producer := service(t, prodPub, nil,
			fxbus.Route[Moved](tp, fxbus.KeyBy(func(e Moved) string { return e.Key })),
			fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
				return func(ctx context.Context, c PlaceOrder) error {
					for k := range keys {
						fxcqrs.Emit(ctx, Moved{Key: fmt.Sprintf("k%d", k), Seq: c.ID})
					}
					return nil
				}
			}),
		)
		for s := range perKey {
			require.NoError(t, fxcqrs.Exec(context.Background(), producer, PlaceOrder{ID: s}))
		}
		require.Eventually(t, func() bool { return got.total.Load() >= keys*perKey }, 60*time.Second, 5*time.Millisecond)
		got.check(t, keys, perKey)
		t.Logf("%s: at most %d handlers at once", b.name, got.most.Load())
		if parallel {
			assert.Greater(t, got.most.Load(), int64(1), "different keys ran in parallel")
		}
	}
	// The in-process broker is left out: it hands each message over on
	// a goroutine of its own, so that it keeps no order to begin with.
	t.Run("nats-jetstream", func(t *testing.T) { t.Parallel(); run(t, natsBroker(t), true) })
	// watermill-amqp's subscriber hands a consumer one message at a time
	// (it waits for each ack before the next): the order holds, and
	// nothing runs in parallel.
	t.Run("rabbitmq", func(t *testing.T) { t.Parallel(); run(t, rabbitBroker(t), false) })
	// watermill-redisstream's subscriber also waits for each ack before
	// it hands over the next message of a stream.
	t.Run("redis-streams", func(t *testing.T) { t.Parallel(); run(t, redisBroker(t), false) })
}

// The sequencer, on its own: a key's next message is handed over only
// once the one before it is acknowledged; a nack of it nacks those
// behind it, so that none overtakes it; a message without a key never
// waits.
func TestInOrderHandsOverAfterTheAck(t *testing.T) {
	t.Parallel()
	in := make(chan *message.Message, 8)
	sub := fxbus.OrderedSubscriber(staticSubscriber(in), 8)
	t.Cleanup(func() { close(in) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, err := sub.Subscribe(ctx, "t")
	require.NoError(t, err)
	msg := func(id, key string) *message.Message {
		m := message.NewMessage(id, nil)
		if key != "" {
			m.Metadata.Set(fxbus.MetadataKey, key)
		}
		in <- m
		return m
	}
	a1, a2, a3 := msg("a1", "a"), msg("a2", "a"), msg("a3", "a")
	b1, free := msg("b1", "b"), msg("free", "")
	defer func() { b1.Ack(); free.Ack() }()
	recv := func() string {
		select {
		case m := <-out:
			return m.UUID
		case <-time.After(time.Minute):
			return "nothing"
		}
	}
	got := map[string]bool{}
	for range 3 {
		got[recv()] = true
	}
	assert.Equal(t, map[string]bool{"a1": true, "b1": true, "free": true}, got, "a2 waits behind a1")
	select {
	case m := <-out:
		t.Fatalf("%s was handed over before a1 was acknowledged", m.UUID)
	case <-time.After(20 * time.Millisecond): // nothing more may come: a bounded look
	}
	a1.Ack()
	assert.Equal(t, "a2", recv())
	a2.Nack()
	select {
	case <-a3.Nacked(): // nacked behind a2: the broker redelivers both
	case <-time.After(time.Minute):
		t.Fatal("a3 was neither nacked nor handed over")
	}
}

// staticSubscriber hands out one channel, whatever the topic.
type staticSubscriber chan *message.Message

func (s staticSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return s, nil
}

func (s staticSubscriber) Close() error { return nil }

func redisBroker(t testing.TB) broker {
	addr := requireService(t, "FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
	return broker{
		name: "redis-streams",
		open: func(t testing.TB, group string) (message.Publisher, message.Subscriber) {
			ps, err := redisbus.New(redisbus.Config{Addr: addr, Group: group})
			require.NoError(t, err)
			t.Cleanup(func() { _ = ps.Close() })
			return ps, ps
		},
		prepare: func(testing.TB, string, ...string) {},
		forget:  func(testing.TB, ...string) {},
	}
}

// A subscription whose context ended hands nothing more over, though its
// reader is ready: every message that still comes from the broker is
// nacked, for the broker to redeliver, and none reaches a router that is
// closing (Watermill's could take it after its Close returned).
func TestEndedSubscriptionHandsNothingOver(t *testing.T) {
	t.Parallel()
	in := make(chan *message.Message)
	sub := fxbus.OrderedSubscriber(staticSubscriber(in), 100)
	ctx, cancel := context.WithCancel(context.Background())
	out, err := sub.Subscribe(ctx, "t")
	require.NoError(t, err)
	cancel()
	var received atomic.Int32
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for m := range out {
			received.Add(1)
			m.Ack()
		}
	}()
	for i := range 50 {
		m := message.NewMessage(fmt.Sprint(i), nil)
		in <- m
		select {
		case <-m.Nacked():
		case <-m.Acked():
			t.Fatalf("message %d was handed over after the subscription ended", i)
		case <-time.After(time.Minute):
			t.Fatalf("message %d was neither nacked nor handed over", i)
		}
	}
	close(in)
	<-drained
	assert.Zero(t, received.Load())
}
