package amqpbus_test

import (
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/bustest"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// conformance is amqpbus as the conformance suite opens it: a PubSub per
// group and replica, its connections dialed through a Severable so that
// the suite can kill it (RabbitMQ requeues a dropped connection's
// unacknowledged messages at once, in place).
func conformance(t testing.TB) bustest.Adapter {
	addr := brokertest.Address(t, "FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	var severables sync.Map // *amqpbus.PubSub → *bustest.Severable
	return bustest.Adapter{
		Open: func(t testing.TB, group string) (message.Publisher, message.Subscriber) {
			sev := &bustest.Severable{}
			ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: group, Dial: sev.Dial})
			require.NoError(t, err)
			severables.Store(ps, sev)
			t.Cleanup(func() { _ = ps.Close() })
			return ps, ps
		},
		Abandon: func(t testing.TB, _ message.Publisher, sub message.Subscriber) {
			sev, ok := severables.Load(sub)
			require.True(t, ok, "not a PubSub of Open")
			sev.(*bustest.Severable).Sever()
		},
		Forget: func(t testing.TB, topics ...string) {
			conn, err := amqp.Dial(addr)
			if err != nil {
				t.Logf("forget %v: %v", topics, err)
				return
			}
			defer conn.Close()
			ch, err := conn.Channel()
			if err != nil {
				return
			}
			defer ch.Close()
			for _, tp := range topics {
				for _, group := range bustest.Groups(tp) {
					_, _ = ch.QueueDelete(tp+"_"+group, false, false, false)
				}
				_ = ch.ExchangeDelete(tp, false, false)
			}
		},
		Unreachable: func(_ testing.TB, addr string) error {
			_, err := amqpbus.New(amqpbus.Config{URL: "amqp://guest:guest@" + addr + "/", Group: "a"})
			return err
		},
	}
}

// TestConformance runs the broker conformance suite on RabbitMQ.
func TestConformance(t *testing.T) {
	t.Parallel()
	bustest.Run(t, conformance(t))
}

// BenchmarkConformance is the suite's InFlight benchmark on RabbitMQ
// (see bustest.Bench).
func BenchmarkConformance(b *testing.B) { bustest.Bench(b, conformance(b)) }
