package fxbus_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
)

// BenchmarkMessages is the cost of making a routed event into a message
// (Bus.Messages, what Forward and the outbox's unit of work call per
// call): on a route without a deliver-by, which every route was before
// messages could expire, so that an A/B against the code before it
// measures what expiry costs the events that do not use it.
func BenchmarkMessages(b *testing.B) {
	bus, err := fxbus.New(fxbus.Config{Publisher: fxbus.NewEmbedded(fxbus.EmbeddedConfig{})},
		[]fxbus.Routing{fxbus.NewRoute[OrderPlaced]("bench")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	events := []any{OrderPlaced{ID: 1, Label: "a"}}
	b.ReportAllocs()
	for b.Loop() {
		if out, _ := bus.Messages(ctx, events); len(out) != 1 {
			b.Fatal("no message")
		}
	}
}
