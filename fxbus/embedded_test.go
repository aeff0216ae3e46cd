package fxbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

func embeddedBroker(t *testing.T, cfg fxbus.EmbeddedConfig) *fxbus.Embedded {
	t.Helper()
	e := fxbus.NewEmbedded(cfg)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

func keyed(key string, seq int) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(seq)))
	msg.Metadata.Set(fxbus.MetadataKey, key)
	return msg
}

// A burst of 10,000 messages published at once to a subscribed topic of
// the default broker (the bus given none) adds under 1,000 goroutines,
// and every message arrives. (Watermill's GoChannel, the broker before,
// started two goroutines per message: about 19,500.) Not parallel: it
// counts the process's goroutines.
func TestEmbeddedBurstIsBounded(t *testing.T) {
	const n = 10_000
	base := runtime.NumGoroutine()
	var most, handled atomic.Int64
	all := make(chan struct{})
	tp := topic(t, "burst")
	var bus *fxbus.Bus
	service(t, nil, nil,
		fx.Populate(&bus),
		fxbus.Subscribe[OrderPlaced](tp),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(context.Context, OrderPlaced) error {
				g := int64(runtime.NumGoroutine())
				for m := most.Load(); g > m && !most.CompareAndSwap(m, g); m = most.Load() {
				}
				if handled.Add(1) == n {
					close(all)
				}
				return nil
			}
		}),
	)
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"id":%d}`, i))
		msgs[i].Metadata.Set(fxbus.MetadataName, "OrderPlaced")
	}
	published := make(chan error, 1)
	go func() { published <- bus.Publisher().Publish(tp, msgs...) }()
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		t.Fatalf("%d of %d handled", handled.Load(), n)
	}
	require.NoError(t, <-published)
	t.Logf("goroutines: %d before, at most %d during the burst", base, most.Load())
	assert.Less(t, most.Load()-int64(base), int64(1000))
}

// With InOrder, and a consumer that nacks at random, each key's
// acknowledged sequence is its published one, strictly increasing and
// complete: a nacked message comes back before its key's later ones.
// Keys run in parallel meanwhile.
func TestEmbeddedInOrderThroughNacks(t *testing.T) {
	t.Parallel()
	const keys, perKey = 8, 200
	e := embeddedBroker(t, fxbus.EmbeddedConfig{Queue: 64})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tp := topic(t, "moves")
	ch, err := e.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 16, InOrder: true})
	require.NoError(t, err)
	var (
		mu       sync.Mutex
		acked    = map[string][]int{}
		inFlight = map[string]int{}
		running  atomic.Int64
		most     atomic.Int64
		total    atomic.Int64
		nacks    atomic.Int64
		wg       sync.WaitGroup
	)
	go func() {
		for msg := range ch {
			wg.Add(1)
			go func() { // a handler per message, as the router runs them
				defer wg.Done()
				r := running.Add(1)
				defer running.Add(-1)
				for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
				}
				key := msg.Metadata.Get(fxbus.MetadataKey)
				mu.Lock()
				inFlight[key]++
				twice := inFlight[key] > 1
				mu.Unlock()
				assert.False(t, twice, "two of key %s handed over at once", key)
				runtime.Gosched()
				mu.Lock()
				inFlight[key]--
				nack := rand.IntN(5) == 0
				if !nack {
					seq, _ := strconv.Atoi(string(msg.Payload))
					acked[key] = append(acked[key], seq)
				}
				mu.Unlock()
				if nack {
					nacks.Add(1)
					msg.Nack()
					return
				}
				msg.Ack()
				total.Add(1)
			}()
		}
	}()
	for s := range perKey {
		for k := range keys {
			require.NoError(t, e.Publish(tp, keyed(fmt.Sprintf("k%d", k), s)))
		}
	}
	require.Eventually(t, func() bool { return total.Load() == keys*perKey }, 2*time.Minute, time.Millisecond)
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for k := range keys {
		seqs := acked[fmt.Sprintf("k%d", k)]
		require.Len(t, seqs, perKey)
		for i, s := range seqs {
			require.Equal(t, i, s, "key k%d: %v", k, seqs)
		}
	}
	t.Logf("%d nacks; at most %d handled at once", nacks.Load(), most.Load())
	assert.Positive(t, nacks.Load())
	assert.Greater(t, most.Load(), int64(1), "keys ran in parallel")
}

// A consumer group's subscription that ends gives its unacknowledged
// messages back: the group's next subscription (a restart in the
// process) gets them first, in their order, before the key's later ones;
// in a named group, and in the broker's default one.
func TestEmbeddedRestartRedeliversFirst(t *testing.T) {
	t.Parallel()
	e := embeddedBroker(t, fxbus.EmbeddedConfig{})
	for name, sub := range map[string]fxbus.FlowSubscriber{"named": e.Group("svc"), "default": e} {
		t.Run(name, func(t *testing.T) {
			tp := topic(t, "restart")
			ctx, cancel := context.WithCancel(context.Background())
			ch, err := sub.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 2, InOrder: true})
			require.NoError(t, err)
			for s := range 4 {
				require.NoError(t, e.Publish(tp, keyed("a", s)))
			}
			m0 := <-ch
			assert.Equal(t, "0", string(m0.Payload))
			m0.Ack()
			m1 := <-ch // held, never acknowledged: the process dies with it
			assert.Equal(t, "1", string(m1.Payload))
			cancel()
			for range ch { // the subscription ends
			}
			assert.NoError(t, m1.Context().Err(), "a message outlives its subscription's context: its consumer finishes it")

			ch2, err := sub.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 2, InOrder: true})
			require.NoError(t, err)
			var got []string
			for range 3 {
				msg := <-ch2
				got = append(got, string(msg.Payload))
				msg.Ack()
			}
			assert.Equal(t, []string{"1", "2", "3"}, got)
			m1.Ack() // late: counts for nothing
		})
	}
}

// A publish waits while a subscribed group's queue is full, and fails,
// never hangs, once the subscription ends or the broker closes.
func TestEmbeddedPublishWaitsThenFails(t *testing.T) {
	t.Parallel()
	for _, end := range []string{"subscription", "broker"} {
		t.Run("the "+end+" ends", func(t *testing.T) {
			t.Parallel()
			e := fxbus.NewEmbedded(fxbus.EmbeddedConfig{Queue: 2})
			defer e.Close()
			tp := topic(t, "slow")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := e.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 1})
			require.NoError(t, err)
			require.NoError(t, e.Publish(tp, keyed("", 0)))
			held := <-ch // in flight, never acknowledged
			require.NoError(t, e.Publish(tp, keyed("", 1), keyed("", 2)), "the queue holds two")
			done := make(chan error, 1)
			go func() { done <- e.Publish(tp, keyed("", 3)) }()
			select {
			case err := <-done:
				t.Fatalf("a publish to a full queue returned: %v", err)
			default:
			}
			if end == "subscription" {
				cancel()
			} else {
				require.NoError(t, e.Close())
			}
			select {
			case err := <-done:
				require.Error(t, err)
				t.Log(err)
			case <-time.After(time.Minute):
				t.Fatal("the publish still waits")
			}
			held.Ack()
		})
	}
}

// A publish to a topic no subscription consumes fails, and so does one
// above the payload limit, naming it; a topic must not be empty.
func TestEmbeddedRefuses(t *testing.T) {
	t.Parallel()
	e := embeddedBroker(t, fxbus.EmbeddedConfig{MaxPayload: 10})
	tp := topic(t, "nobody")
	err := e.Publish(tp, keyed("", 1))
	require.ErrorContains(t, err, "no subscriber to \""+tp+"\"")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := e.Subscribe(ctx, tp)
	require.NoError(t, err)
	big := message.NewMessage(watermill.NewUUID(), make([]byte, 11))
	n, err := e.PublishBatch(tp, []*message.Message{keyed("", 1), big, keyed("", 2)})
	require.ErrorContains(t, err, "above the limit of 10 bytes")
	assert.Equal(t, 1, n, "the first was taken")
	(<-ch).Ack()

	require.Error(t, e.CheckTopic(""))
	require.NoError(t, e.CheckTopic("payments.confirmed"))
	caps := e.Capabilities()
	assert.Equal(t, fxbus.Capabilities{Name: "embedded", OrderPerKey: true, Parallel: true, MaxPayload: 10, TopicRule: "any non-empty name"}, caps)
}

// A bus on an in-process broker it was given: a message that dead-letters
// to a topic nothing subscribes to is dropped there (with a log line), and
// acknowledged, not nacked and redelivered again and again; the next
// message, behind it in InFlight(1), is handled.
func TestEmbeddedDeadLetterWithoutSubscriber(t *testing.T) {
	t.Parallel()
	e := embeddedBroker(t, fxbus.EmbeddedConfig{})
	tp := topic(t, "garbled")
	got := newInbox[OrderPlaced]()
	var bus *fxbus.Bus
	service(t, e, e, fx.Populate(&bus),
		fxbus.Subscribe[OrderPlaced](tp, fxbus.InFlight(1)),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(_ context.Context, e OrderPlaced) error { got.add(e); return nil }
		}))
	bad := message.NewMessage(watermill.NewUUID(), []byte(`{"id": "not a number"`))
	good := message.NewMessage(watermill.NewUUID(), []byte(`{"id": 2}`))
	require.NoError(t, e.Publish(tp, bad, good))
	assert.Equal(t, []OrderPlaced{{ID: 2}}, got.wait(t, 1))
	assert.Equal(t, uint64(1), bus.Stats().DeadLettered)
}

// On the defaults (no broker given), a subscription with InOrder keeps
// each key's order while the keys run in parallel, as on NATS.
func TestEmbeddedInOrderOnTheDefaults(t *testing.T) {
	t.Parallel()
	const keys, perKey = 4, 60
	tp := topic(t, "moves")
	got := newKeyOrder()
	service(t, nil, nil,
		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}}),
		fxbus.Subscribe[Moved](tp, fxbus.InOrder(), fxbus.InFlight(16)),
		fxcqrs.AsEventHandler(func() eventFunc[Moved] {
			return func(ctx context.Context, e Moved) error {
				if fxbus.MessageID(ctx) != "" {
					got.handle(e)
				}
				return nil
			}
		}),
	)
	producer := service(t, nil, nil,
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
	require.Eventually(t, func() bool { return got.total.Load() >= keys*perKey }, 2*time.Minute, 5*time.Millisecond)
	got.check(t, keys, perKey)
	assert.Greater(t, got.most.Load(), int64(1), "different keys ran in parallel")
}
