package natsjs_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// natsURL is the NATS server the tests use (see brokertest.Address).
func natsURL(t testing.TB) string {
	return brokertest.Address(t, "FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
}

// subscribed is a PubSub of the "svc" group subscribed to a stream of
// the test's own, until the test ends.
func subscribed(t *testing.T, base string) (*natsjs.PubSub, string, <-chan *message.Message) {
	t.Helper()
	addr := natsURL(t)
	tp := topic(t, addr, base)
	ps := pubsub(t, addr, "svc")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := ps.Subscribe(ctx, tp)
	require.NoError(t, err)
	return ps, tp, ch
}

// topic is a stream of the test's own, deleted when it ends.
func topic(t testing.TB, addr, base string) string {
	t.Helper()
	tp := fmt.Sprintf("%s_%d", base, rand.Uint64())
	t.Cleanup(func() {
		conn, err := nats.Connect(addr)
		if err != nil {
			return
		}
		defer conn.Close()
		if js, err := conn.JetStream(); err == nil {
			_ = js.DeleteStream(natsjs.StreamName(tp))
		}
	})
	return tp
}

func pubsub(t testing.TB, addr, group string) *natsjs.PubSub {
	t.Helper()
	ps, err := natsjs.New(natsjs.Config{URL: addr, Group: group, AckWait: 2 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close()) })
	return ps
}

func msg(id, payload string) *message.Message {
	m := message.NewMessage(id, []byte(payload))
	m.Metadata.Set("name", "OrderPlaced")
	return m
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

// Messages arrive in order with their id and metadata; one published
// twice with one id arrives once (JetStream's deduplication).
func TestRoundTripAndDeduplication(t *testing.T) {
	t.Parallel()
	ps, tp, ch := subscribed(t, "orders")
	require.NoError(t, ps.Publish(tp, msg("id-1", "one"), msg("id-2", "two")))
	require.NoError(t, ps.Publish(tp, msg("id-1", "one again")), "a duplicate is acknowledged")
	require.NoError(t, ps.Publish(tp, msg("id-3", "three")))
	for _, want := range []string{"one", "two", "three"} {
		m := next(t, ch)
		assert.Equal(t, want, string(m.Payload))
		assert.Equal(t, "OrderPlaced", m.Metadata.Get("name"))
		m.Ack()
	}
	select {
	case m := <-ch:
		t.Fatalf("a fourth message: %s", m.Payload)
	case <-time.After(300 * time.Millisecond): // a bounded check that nothing more comes
	}
}

// A replay (fxbus.MetadataReplay) of a message JetStream has seen is not
// dropped as its duplicate, and arrives with the message's own id, so
// that a handler's inbox still knows it; a second publish of the same
// replay is a duplicate again.
func TestReplayIsNotADuplicate(t *testing.T) {
	t.Parallel()
	ps, tp, ch := subscribed(t, "replays")
	require.NoError(t, ps.Publish(tp, msg("id-1", "first")))
	replay := func() *message.Message {
		m := msg("id-1", "replayed")
		m.Metadata.Set("replay", "1700000000000000000")
		return m
	}
	require.NoError(t, ps.Publish(tp, replay()))
	require.NoError(t, ps.Publish(tp, replay()), "the same replay twice: a duplicate")
	require.NoError(t, ps.Publish(tp, msg("id-2", "last")))
	for _, want := range []string{"first", "replayed", "last"} {
		m := next(t, ch)
		assert.Equal(t, want, string(m.Payload))
		if want != "last" {
			assert.Equal(t, "id-1", m.UUID, "the replay keeps the message's id")
		}
		m.Ack()
	}
}

// A producer may publish before any consumer subscribed, once the topic
// is provisioned (the bus provisions its routes' topics at start): the
// consumer that subscribes later gets the message. A stream another
// process made counts as provisioned.
func TestPublishBeforeSubscribe(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "early")
	ps := pubsub(t, addr, "svc")
	require.NoError(t, pubsub(t, addr, "other").Provision(context.Background(), tp))
	require.NoError(t, ps.Publish(tp, msg("e-1", "early")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.Subscribe(ctx, tp)
	require.NoError(t, err)
	m := next(t, ch)
	assert.Equal(t, "early", string(m.Payload))
	m.Ack()
}

// subscriber is what the close stress loop subscribes with.
type subscriber interface {
	message.Subscriber
}

// TestCloseWhileDelivering closes a subscription while messages keep
// arriving, many times: under -race, a callback that sends on the closed
// channel, or races its close, fails the run. The bus's own subscriber
// runs it on every test run (50 rounds; FXCQRS_STRESS_ROUNDS for more).
// watermill-nats's subscriber has that race (it closes its output while a
// callback may still select on sending to it): set
// FXCQRS_STRESS_WATERMILL=1 to run the same loop on it and see it caught.
func TestCloseWhileDelivering(t *testing.T) {
	addr := natsURL(t)
	rounds := 50
	if n, err := strconv.Atoi(os.Getenv("FXCQRS_STRESS_ROUNDS")); err == nil {
		rounds = n
	}
	subs := map[string]func(t *testing.T, group string) subscriber{
		"natsjs": func(t *testing.T, group string) subscriber { return pubsub(t, addr, group) },
	}
	if os.Getenv("FXCQRS_STRESS_WATERMILL") == "1" {
		subs["watermill-nats"] = func(t *testing.T, group string) subscriber {
			js := wnats.JetStreamConfig{ // as the bus's broker tests configure it
				AutoProvision: true, DurablePrefix: group,
				SubscribeOptions: []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit(), nats.ManualAck(), nats.AckWait(2 * time.Second)},
			}
			s, err := wnats.NewSubscriber(wnats.SubscriberConfig{
				URL: addr, QueueGroupPrefix: group, SubscribersCount: 4, AckWaitTimeout: 2 * time.Second,
				CloseTimeout: 5 * time.Second, Unmarshaler: &wnats.NATSMarshaler{}, JetStream: js,
			}, watermill.NopLogger{})
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Close() })
			return s
		}
	}
	for name, open := range subs {
		t.Run(name, func(t *testing.T) {
			tp := topic(t, addr, "stress")
			pub := pubsub(t, addr, "stress")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := pub.Subscribe(ctx, tp) // provisions the stream and the group's consumer
			require.NoError(t, err)
			cancel()
			for range ch { // drained: the subscription ended
			}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for p := range 4 { // a flood: callbacks are always in flight
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						_ = pub.Publish(tp, msg(fmt.Sprintf("m-%d-%d", p, i), "x"))
					}
				})
			}
			for round := range rounds {
				sub := open(t, "stress")
				ctx, cancel := context.WithCancel(context.Background())
				ch, err := sub.Subscribe(ctx, tp)
				require.NoError(t, err, "round %d", round)
				for range 1 + round%3 {
					(<-ch).Ack()
				}
				cancel() // close while messages arrive
				for m := range ch {
					m.Nack()
				}
				require.NoError(t, sub.Close())
			}
			close(stop)
			wg.Wait()
		})
	}
}

func jetStream(t testing.TB, addr string) nats.JetStreamContext {
	t.Helper()
	conn, err := nats.Connect(addr)
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	js, err := conn.JetStream()
	require.NoError(t, err)
	return js
}

func itoa(n int) string { return strconv.Itoa(n) }
