package amqpbus_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/stretchr/testify/require"
)

// BenchmarkConsume compares Flows over one exchange and queue (see
// brokertest.BenchConsume). Compare the sub-benchmarks of one run.
func BenchmarkConsume(b *testing.B) {
	brokertest.BenchConsume(b, func(b *testing.B) brokertest.Consume {
		addr := amqpURL(b)
		tp := topic(b, addr, "bench")
		ps := newPubSub(b, amqpbus.Config{URL: addr, Group: "bench"})
		require.NoError(b, ps.ProvisionConsumer(context.Background(), tp))
		publish := func(tp string, msgs ...*message.Message) error {
			_, err := ps.PublishBatch(tp, msgs)
			return err
		}
		return brokertest.Consume{Topic: tp, Subscriber: ps, Publish: publish}
	})
}
