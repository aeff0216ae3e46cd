package fxbus_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
)

// BenchmarkMessagesTenant is BenchmarkMessages under a tenant's context:
// what stamping the tenant costs a message, against BenchmarkMessages in
// the same run.
func BenchmarkMessagesTenant(b *testing.B) {
	bus, err := fxbus.New(fxbus.Config{Publisher: fxbus.NewEmbedded(fxbus.EmbeddedConfig{})},
		[]fxbus.Routing{fxbus.NewRoute[OrderPlaced]("bench")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := fxbus.WithTenant(context.Background(), "acme")
	events := []any{OrderPlaced{ID: 1, Label: "a"}}
	b.ReportAllocs()
	for b.Loop() {
		if out, _ := bus.Messages(ctx, events); len(out) != 1 {
			b.Fatal("no message")
		}
	}
}
