package otelbus_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel/otelbus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// What otelbus adds to each routed event: making its message (what a
// route and the outbox's unit of work do for every routed event), with
// and without Tracing, under a sampled span as a traced call has.
//
//	go test -run '^$' -bench RoutedEvent -benchmem
func BenchmarkRoutedEvent(b *testing.B) {
	tp := sdktrace.NewTracerProvider() // samples everything, exports nothing
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("bench").Start(context.Background(), "command")
	defer span.End()
	events := []any{OrderPlaced{ID: 7}}
	for _, tc := range []struct {
		name string
		cfg  fxbus.Config
	}{
		{"bare", fxbus.Config{}},
		{"otelbus", func() fxbus.Config {
			t := otelbus.New(tp, otelbus.Config{})
			return fxbus.Config{Tracer: t, Propagators: []fxbus.Propagator{t}}
		}()},
	} {
		bus, err := fxbus.New(tc.cfg, []fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders")}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if out, fails := bus.Messages(ctx, events); len(out) != 1 || len(fails) != 0 {
					b.Fatal(out, fails)
				}
			}
		})
	}
}
