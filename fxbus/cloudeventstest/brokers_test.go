package cloudeventstest

import (
	"context"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
	)
}

func TestNATS(t *testing.T) {
	interop(t, func(t *testing.T) broker {
		url := brokertest.Address(t, "FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
		ps, err := natsjs.New(natsjs.Config{URL: url, Group: name("ce")})
		require.NoError(t, err)
		t.Cleanup(func() { _ = ps.Close() })
		nc, err := nats.Connect(url)
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		js, err := nc.JetStream()
		require.NoError(t, err)
		return broker{
			proto: natsProtocol, pubsub: ps,
			send: func(t *testing.T, topic, _ string, m wire) {
				msg := nats.NewMsg(topic)
				msg.Data = m.body
				for k, v := range m.headers {
					msg.Header.Set(k, v)
				}
				_, err := js.PublishMsg(msg)
				require.NoError(t, err)
			},
			listen: func(t *testing.T, topic string) <-chan wire {
				ch := make(chan wire, 1)
				sub, err := nc.Subscribe(topic, func(msg *nats.Msg) {
					m := wire{headers: map[string]string{}, body: msg.Data}
					for k, v := range msg.Header {
						m.headers[k] = v[0]
					}
					ch <- m
				})
				require.NoError(t, err)
				require.NoError(t, nc.Flush())
				t.Cleanup(func() { _ = sub.Unsubscribe() })
				return ch
			},
		}
	})
}

func TestRabbitMQ(t *testing.T) {
	interop(t, func(t *testing.T) broker {
		url := brokertest.Address(t, "FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
		ps, err := amqpbus.New(amqpbus.Config{URL: url, Group: name("ce")})
		require.NoError(t, err)
		t.Cleanup(func() { _ = ps.Close() })
		conn, err := amqp.Dial(url)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		ch, err := conn.Channel()
		require.NoError(t, err)
		return broker{
			proto: amqpProtocol, pubsub: ps,
			send: func(t *testing.T, topic, _ string, m wire) {
				pub := amqp.Publishing{Headers: amqp.Table{}, Body: m.body}
				for k, v := range m.headers {
					if k == "content-type" { // the binding's property
						pub.ContentType = v
						continue
					}
					pub.Headers[k] = v
				}
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				require.NoError(t, ch.PublishWithContext(ctx, topic, "", false, false, pub))
			},
			listen: func(t *testing.T, topic string) <-chan wire {
				q, err := ch.QueueDeclare("", false, true, true, false, nil)
				require.NoError(t, err)
				require.NoError(t, ch.QueueBind(q.Name, "", topic, false, nil))
				ds, err := ch.Consume(q.Name, "", true, true, false, false, nil)
				require.NoError(t, err)
				out := make(chan wire, 1)
				go func() {
					for d := range ds {
						m := wire{headers: map[string]string{}, body: d.Body}
						for k, v := range d.Headers {
							if s, ok := v.(string); ok {
								m.headers[k] = s
							}
						}
						m.headers["content-type"] = d.ContentType
						out <- m
					}
				}()
				return out
			},
		}
	})
}

func TestKafka(t *testing.T) {
	interop(t, func(t *testing.T) broker {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		ps, err := kafkabus.New(kafkabus.Config{Brokers: c.ListenAddrs(), Group: name("ce"), Partitions: 2, RebalanceTimeout: 20 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = ps.Close() })
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		return broker{
			proto: kafkaProtocol, pubsub: ps,
			send: func(t *testing.T, topic, key string, m wire) {
				r := &kgo.Record{Topic: topic, Key: []byte(key), Value: m.body}
				for k, v := range m.headers {
					r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
				}
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
			},
			listen: func(t *testing.T, topic string) <-chan wire {
				rc, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
					kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				require.NoError(t, err)
				ctx, cancel := context.WithCancel(context.Background())
				out := make(chan wire, 1)
				done := make(chan struct{})
				go func() {
					defer close(done)
					for ctx.Err() == nil {
						fs := rc.PollFetches(ctx)
						fs.EachRecord(func(r *kgo.Record) {
							m := wire{headers: map[string]string{}, body: r.Value}
							for _, h := range r.Headers {
								m.headers[h.Key] = string(h.Value)
							}
							m.headers["kafka-key"] = string(r.Key)
							out <- m
						})
					}
				}()
				t.Cleanup(func() { cancel(); <-done; rc.Close() })
				return out
			},
		}
	})
}
