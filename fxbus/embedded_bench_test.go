package fxbus_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// BenchmarkInProcessBroker publishes b.N messages to a subscribed topic
// and acknowledges each as it arrives: the in-process broker against
// Watermill's GoChannel (OutputChannelBuffer 64, as the bus made it), the
// same run, to read as a ratio.
func BenchmarkInProcessBroker(b *testing.B) {
	type pubSub interface {
		message.Publisher
		message.Subscriber
	}
	for _, bc := range []struct {
		name string
		open func() pubSub
	}{
		{"gochannel", func() pubSub {
			return gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64}, watermill.NopLogger{})
		}},
		{"embedded", func() pubSub { return fxbus.NewEmbedded(fxbus.EmbeddedConfig{}) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ps := bc.open()
			defer ps.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := ps.Subscribe(ctx, "bench")
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for n := 0; n < b.N; n++ {
					(<-ch).Ack()
				}
			}()
			payload := []byte(`{"id":1}`)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := ps.Publish("bench", message.NewMessage(watermill.NewUUID(), payload)); err != nil {
					b.Fatal(err)
				}
			}
			<-done
		})
	}
}
