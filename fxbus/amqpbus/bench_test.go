package amqpbus_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/stretchr/testify/require"
)

// BenchmarkConsume consumes b.N messages published ahead, each
// acknowledged on a goroutine of its own as a handler would: InFlight(16)
// against InFlight(1), and InOrder over 64 keys against the same
// subscription without it. Compare the sub-benchmarks of one run.
func BenchmarkConsume(b *testing.B) {
	for _, tc := range []struct {
		name string
		flow fxbus.Flow
	}{
		{"InFlight1", fxbus.Flow{InFlight: 1}},
		{"InFlight16", fxbus.Flow{InFlight: 16}},
		{"InFlight16InOrder64Keys", fxbus.Flow{InFlight: 16, InOrder: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := amqpURL(b)
			tp := topic(b, addr, "bench")
			ps := newPubSub(b, amqpbus.Config{URL: addr, Group: "bench"})
			require.NoError(b, ps.ProvisionConsumer(context.Background(), tp))
			msgs := make([]*message.Message, 0, 500)
			for i := range b.N {
				msgs = append(msgs, keyed(fmt.Sprint(i), fmt.Sprint(i%64)))
				if len(msgs) == cap(msgs) || i == b.N-1 {
					_, err := ps.PublishBatch(tp, msgs)
					require.NoError(b, err)
					msgs = msgs[:0]
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ReportAllocs()
			b.ResetTimer()
			ch, err := ps.SubscribeFlow(ctx, tp, tc.flow)
			require.NoError(b, err)
			for range b.N {
				m := <-ch
				go m.Ack()
			}
		})
	}
}
