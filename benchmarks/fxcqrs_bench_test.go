package benchmarks

import (
	"context"
	"fmt"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"golang.org/x/sync/errgroup"
)

func newMediator(b *testing.B, cfg fxcqrs.Config, opts ...fxcqrs.Option) *fxcqrs.Mediator {
	b.Helper()
	m, err := fxcqrs.New(cfg, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := m.Stop(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return m
}

func limit(n int) fxcqrs.Config {
	return fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: n}}
}

// BenchmarkSend: the physical floor. Send of a request that emits nothing
// against calling the handler directly and through an interface.
func BenchmarkSend(b *testing.B) {
	ctx := context.Background()
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		h := QueryHandler{}
		for i := 0; b.Loop(); i++ {
			_, _ = h.Handle(ctx, Query{ID: i})
		}
	})
	b.Run("interface", func(b *testing.B) {
		b.ReportAllocs()
		var h fxcqrs.RequestHandler[Query, int] = QueryHandler{}
		for i := 0; b.Loop(); i++ {
			_, _ = h.Handle(ctx, Query{ID: i})
		}
	})
	b.Run("fxcqrs", func(b *testing.B) {
		m := newMediator(b, fxcqrs.Config{}, fxcqrs.WithRequestHandlers(QueryHandler{}))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := fxcqrs.Send[int](ctx, m, Query{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSendParallel: Send on every core at once (ns/op is wall time
// per call, so it shrinks as cores are added when nothing is shared),
// against the interface call and the Go-MediatR technique, which share
// nothing but a read-only map.
func BenchmarkSendParallel(b *testing.B) {
	ctx := context.Background()
	b.Run("interface", func(b *testing.B) {
		var h fxcqrs.RequestHandler[Query, int] = QueryHandler{}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 1000; pb.Next(); i++ {
				_, _ = h.Handle(ctx, Query{ID: i})
			}
		})
	})
	b.Run("mediatr-style", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 1000; pb.Next(); i++ {
				if _, err := styleSend[Query, int](ctx, Query{ID: i}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("fxcqrs", func(b *testing.B) {
		m := newMediator(b, fxcqrs.Config{}, fxcqrs.WithRequestHandlers(QueryHandler{}))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 1000; pb.Next(); i++ {
				if _, err := fxcqrs.Send[int](ctx, m, Query{ID: i}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkExec: a command that emits n events to a no-op handler, under
// each limit and sequentially, against the same fan-out by hand.
func BenchmarkExec(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1, 4, 16, 64} {
		for _, lim := range []int{1, 3, 16} {
			b.Run(fmt.Sprintf("events=%d/errgroup-limit=%d", n, lim), func(b *testing.B) {
				b.ReportAllocs()
				h := NopEventHandler{}
				for i := 0; b.Loop(); i++ {
					var g errgroup.Group
					g.SetLimit(lim)
					for s := range n {
						g.Go(func() error { return h.Handle(ctx, Event{OrderID: i, Seq: s}) })
					}
					if err := g.Wait(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("events=%d/fxcqrs-limit=%d", n, lim), func(b *testing.B) {
				m := newMediator(b, limit(lim),
					fxcqrs.WithCommandHandlers(EmitHandler{N: n}),
					fxcqrs.WithEventHandlers(NopEventHandler{}))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if err := fxcqrs.Exec(ctx, m, Cmd{ID: i}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("events=%d/fxcqrs-sequential", n), func(b *testing.B) {
			m := newMediator(b, fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: true}},
				fxcqrs.WithCommandHandlers(EmitHandler{N: n}),
				fxcqrs.WithEventHandlers(NopEventHandler{}))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := fxcqrs.Exec(ctx, m, Cmd{ID: i}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPublish: one event to 1 and 4 handlers, against calling them.
func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	all := []fxcqrs.EventHandler[Event]{NopEventHandler{}, NopEventHandler2{}, NopEventHandler3{}, NopEventHandler4{}}
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("handlers=%d/direct", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				for _, h := range all[:n] {
					_ = h.Handle(ctx, Event{OrderID: i})
				}
			}
		})
		b.Run(fmt.Sprintf("handlers=%d/fxcqrs", n), func(b *testing.B) {
			hs := make([]any, n)
			for i := range hs {
				hs[i] = all[i]
			}
			m := newMediator(b, limit(4), fxcqrs.WithEventHandlers(hs...))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := fxcqrs.Publish(ctx, m, Event{OrderID: i}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStream: 100 items with one event each, against ranging over the
// handler's own iterator and calling the event handler by hand.
func BenchmarkStream(b *testing.B) {
	ctx := context.Background()
	const items = 100
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		h := NopEventHandler{}
		for b.Loop() {
			for _, err := range rawTicks(items, func(e Event) { _ = h.Handle(ctx, e) }) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	for _, cfg := range []struct {
		name string
		ec   fxcqrs.EventConfig
	}{{"fxcqrs-limit=10", fxcqrs.EventConfig{}}, {"fxcqrs-sequential", fxcqrs.EventConfig{Sequential: true}}} {
		b.Run(cfg.name, func(b *testing.B) {
			m := newMediator(b, fxcqrs.Config{StreamEvents: cfg.ec},
				fxcqrs.WithStreamHandlers(TickHandler{}),
				fxcqrs.WithEventHandlers(NopEventHandler{}))
			b.ReportAllocs()
			for b.Loop() {
				for _, err := range fxcqrs.Stream[int](ctx, m, Ticks{N: items}) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
