package fxbus_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	nc "github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// requireService returns the address of a service the test needs, from
// env or its default. An unreachable one skips the test, naming the
// variable, or fails it when FXCQRS_REQUIRE_SERVICES=1 (as in CI).
func requireService(t testing.TB, env, def string) string {
	t.Helper()
	return brokertest.Address(t, env, def)
}

// broker opens publishers and subscribers on one kind of broker, for the
// bus's own tests and benchmarks over real brokers. What every broker
// adapter must do is the conformance suite's (package bustest, run from
// each adapter's conformance_test.go and from conformance_test.go here
// for the in-process broker). A
// subscriber's group is its consumer group: subscribers of one group share
// a topic's messages, as replicas of one service do; each group gets all.
type broker struct {
	name string
	open func(t testing.TB, group string) (message.Publisher, message.Subscriber)
	// prepare makes what replicas of each group share on topic, where the
	// broker needs it made ahead.
	prepare func(t testing.TB, topic string, groups ...string)
	// forget deletes what the broker keeps of the test's topics.
	forget func(t testing.TB, topics ...string)
}

func natsBroker(t testing.TB) broker {
	addr := requireService(t, "FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	return broker{
		name: "nats-jetstream",
		// The bus's own JetStream publisher and subscriber (natsjs), one
		// PubSub per replica, on its group's durable consumer.
		open: func(t testing.TB, group string) (message.Publisher, message.Subscriber) {
			ps, err := natsjs.New(natsjs.Config{URL: addr, Group: group, AckWait: 2 * time.Second})
			require.NoError(t, err)
			t.Cleanup(func() { _ = ps.Close() })
			return ps, ps
		},
		// A durable consumer that a subscription creates is deleted by the
		// client when that subscription ends (nats.go deletes what it
		// created), and the other replicas of its group stall. So the
		// stream and each group's consumer are provisioned ahead, as an
		// operator would, and replicas only join them.
		prepare: func(t testing.TB, topic string, groups ...string) {
			conn, err := nc.Connect(addr)
			require.NoError(t, err)
			defer conn.Close()
			js, err := conn.JetStream()
			require.NoError(t, err)
			_, err = js.AddStream(&nc.StreamConfig{Name: topic, Subjects: []string{topic}})
			require.NoError(t, err)
			for _, g := range groups {
				_, err = js.AddConsumer(topic, &nc.ConsumerConfig{
					Durable:        g,
					DeliverSubject: nc.NewInbox(),
					DeliverGroup:   g,
					DeliverPolicy:  nc.DeliverAllPolicy,
					AckPolicy:      nc.AckExplicitPolicy,
					AckWait:        2 * time.Second,
				})
				require.NoError(t, err)
			}
		},
		forget: func(t testing.TB, topics ...string) {
			conn, err := nc.Connect(addr)
			require.NoError(t, err)
			defer conn.Close()
			js, err := conn.JetStream()
			require.NoError(t, err)
			for _, tp := range topics {
				_ = js.DeleteStream(tp)
			}
		},
	}
}

func rabbitBroker(t testing.TB) broker {
	addr := requireService(t, "FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	return broker{
		name: "rabbitmq",
		open: func(t testing.TB, group string) (message.Publisher, message.Subscriber) {
			cfg := wamqp.NewDurablePubSubConfig(addr, wamqp.GenerateQueueNameTopicNameWithSuffix(group))
			pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
			require.NoError(t, err)
			sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
			require.NoError(t, err)
			t.Cleanup(func() {
				_ = sub.Close()
				_ = pub.Close()
			})
			return pub, sub
		},
		prepare: func(testing.TB, string, ...string) {}, // a group's queue outlives its consumers
		forget: func(t testing.TB, topics ...string) {
			conn, err := amqp.Dial(addr)
			require.NoError(t, err)
			defer conn.Close()
			ch, err := conn.Channel()
			require.NoError(t, err)
			defer ch.Close()
			for _, tp := range topics {
				// Queues are named topic_group: find them by the broker's
				// own listing is not in the client, so the tests delete
				// the ones they know.
				for _, group := range []string{"a", "b", "c", "p", "dead"} {
					_, _ = ch.QueueDelete(tp+"_"+group, false, false, false)
				}
				_ = ch.ExchangeDelete(tp, false, false)
			}
		},
	}
}

// goChannelBroker is the in-process broker, as a broker: every subscriber
// of a topic gets every message, whatever its group.
func goChannelBroker(t testing.TB) broker {
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	return broker{
		name:    "gochannel",
		open:    func(testing.TB, string) (message.Publisher, message.Subscriber) { return gc, gc },
		prepare: func(testing.TB, string, ...string) {},
		forget:  func(testing.TB, ...string) {},
	}
}
