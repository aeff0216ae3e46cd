package fxbus_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/bustest"
)

// embeddedConformance is the in-process broker as the conformance suite
// opens it: one fxbus.Embedded for the run, a consumer group of it per
// Open, as a service's replica has on a broker. It has no address to be
// unreachable at and no connection to cut (Abandon): a killed process
// takes it along.
func embeddedConformance(t testing.TB) bustest.Adapter {
	e := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
	t.Cleanup(func() { _ = e.Close() })
	return bustest.Adapter{
		Open: func(t testing.TB, group string) (message.Publisher, message.Subscriber) {
			g := e.Group(group)
			t.Cleanup(func() { _ = g.Close() })
			return g, g
		},
	}
}

// TestConformance runs the broker conformance suite on the in-process
// broker.
func TestConformance(t *testing.T) {
	t.Parallel()
	bustest.Run(t, embeddedConformance(t))
}

// BenchmarkConformance is the suite's InFlight benchmark on the
// in-process broker (see bustest.Bench).
func BenchmarkConformance(b *testing.B) { bustest.Bench(b, embeddedConformance(b)) }
