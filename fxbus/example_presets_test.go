package fxbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// The broker pages' snippets: each preset in one line of two services'
// graphs (shipping routes OrderShipped, mailing subscribes), against the
// real broker; skipped when it is unreachable, failed under
// FXCQRS_REQUIRE_SERVICES=1. Each run uses a topic of its own and
// deletes what the broker keeps of it.
func TestExamplePresets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		broker func(t *testing.T, topic string) func(service string) fx.Option
	}{
		{"natsjs", func(t *testing.T, topic string) func(string) fx.Option {
			url := brokertest.Address(t, "FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
			t.Cleanup(func() { exampleDeleteStream(t, url, topic) })
			// snippet:natsjs
			return func(service string) fx.Option {
				return natsjs.Module(natsjs.Config{URL: url, Group: service})
			}
			// end snippet
		}},
		{"amqpbus", func(t *testing.T, topic string) func(string) fx.Option {
			url := brokertest.Address(t, "FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
			t.Cleanup(func() { exampleDeleteQueues(t, url, topic, "shipping", "mailing") })
			// snippet:amqpbus
			return func(service string) fx.Option {
				return amqpbus.Module(amqpbus.Config{URL: url, Group: service})
			}
			// end snippet
		}},
		{"redisbus", func(t *testing.T, topic string) func(string) fx.Option {
			addr := brokertest.Address(t, "FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
			t.Cleanup(func() {
				c := redis.NewClient(&redis.Options{Addr: addr})
				defer c.Close() //nolint:errcheck // a clean-up
				_ = c.Del(context.Background(), topic).Err()
			})
			// snippet:redisbus
			return func(service string) fx.Option {
				return redisbus.Module(redisbus.Config{Addr: addr, Group: service})
			}
			// end snippet
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := fmt.Sprintf("example_%d", rand.Uint64())
			broker := tc.broker(t, topic)
			got := make(chan OrderShipped, 1)
			_, stopMailing := startExample(broker("mailing"),
				fxbus.Subscribe[OrderShipped](topic),
				fxcqrs.AsEventHandler(func() onShipped {
					return func(_ context.Context, e OrderShipped) error {
						got <- e
						return nil
					}
				}))
			defer stopMailing()
			shipping, stopShipping := startExample(broker("shipping"),
				fxbus.Route[OrderShipped](topic),
				fxcqrs.AsCommandHandler(func() shipOrder { return shipOrder{} }))
			defer stopShipping()

			require.NoError(t, fxcqrs.Exec(context.Background(), shipping, ShipOrder{ID: 9}))
			select {
			case e := <-got:
				require.Equal(t, 9, e.ID)
			case <-time.After(time.Minute):
				t.Fatal("nothing arrived within a minute")
			}
		})
	}
}

func exampleDeleteStream(t *testing.T, url, topic string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Logf("clean-up: %v", err)
		return
	}
	defer nc.Close()
	if js, err := nc.JetStream(); err == nil {
		_ = js.DeleteStream(topic)
	}
}

// exampleDeleteQueues deletes the queues amqpbus names topic_group, and the
// topic's exchange.
func exampleDeleteQueues(t *testing.T, url, topic string, groups ...string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Logf("clean-up: %v", err)
		return
	}
	defer conn.Close() //nolint:errcheck // a clean-up
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close() //nolint:errcheck // a clean-up
	for _, g := range groups {
		_, _ = ch.QueueDelete(topic+"_"+g, false, false, false)
	}
	_ = ch.ExchangeDelete(topic, false, false)
}
