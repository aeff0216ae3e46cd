package brokertest

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/require"
)

// Consume is one broker's part of BenchConsume, set up per sub-benchmark:
// a topic of its own, provisioned for Subscriber, and how to publish to it.
type Consume struct {
	Topic      string
	Subscriber fxbus.FlowSubscriber
	Publish    func(topic string, msgs ...*message.Message) error
}

// BenchConsume consumes b.N messages published ahead, each acknowledged
// on a goroutine of its own as a handler would: InFlight(16) against
// InFlight(1), and InOrder over 64 keys against the same subscription
// without it. setup gives the broker's parts for each sub-benchmark.
func BenchConsume(b *testing.B, setup func(b *testing.B) Consume) {
	b.Helper()
	for _, tc := range []struct {
		name string
		flow fxbus.Flow
	}{
		{"InFlight1", fxbus.Flow{InFlight: 1}},
		{"InFlight16", fxbus.Flow{InFlight: 16}},
		{"InFlight16InOrder64Keys", fxbus.Flow{InFlight: 16, InOrder: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := setup(b)
			msgs := make([]*message.Message, 0, 500)
			for i := range b.N {
				m := message.NewMessage(fmt.Sprint(i), []byte(fmt.Sprint(i)))
				m.Metadata.Set(fxbus.MetadataKey, fmt.Sprint(i%64))
				msgs = append(msgs, m)
				if len(msgs) == cap(msgs) || i == b.N-1 {
					require.NoError(b, c.Publish(c.Topic, msgs...))
					msgs = msgs[:0]
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ReportAllocs()
			b.ResetTimer()
			ch, err := c.Subscriber.SubscribeFlow(ctx, c.Topic, tc.flow)
			require.NoError(b, err)
			for range b.N {
				m := <-ch
				go m.Ack()
			}
		})
	}
}
