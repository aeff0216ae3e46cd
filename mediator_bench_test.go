package fxcqrs_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"golang.org/x/sync/errgroup"
)

type benchQuery struct{ ID int }

type benchQueryHandler struct{}

//go:noinline
func (benchQueryHandler) Handle(_ context.Context, q benchQuery) (int, error) { return q.ID, nil }

type benchCmd struct{ ID int }

// benchEvent is 16 bytes, so boxing it allocates as a real event would.
type benchEvent struct{ OrderID, Qty int }

type benchEmitter struct{ n int }

func (h benchEmitter) Handle(ctx context.Context, c benchCmd) error {
	for i := range h.n {
		fxcqrs.Emit(ctx, benchEvent{OrderID: c.ID, Qty: i})
	}
	return nil
}

type benchEventHandler struct{}

//go:noinline
func (benchEventHandler) Handle(context.Context, benchEvent) error { return nil }

func benchMediator(b *testing.B, cfg fxcqrs.Config, emits int) *fxcqrs.Mediator {
	b.Helper()
	return newMediator(b, cfg,
		fxcqrs.WithRequestHandlers(benchQueryHandler{}),
		fxcqrs.WithCommandHandlers(benchEmitter{n: emits}),
		fxcqrs.WithEventHandlers(benchEventHandler{}),
	)
}

// BenchmarkSend compares Send of a request that emits nothing with calling
// the handler directly and through an interface.
func BenchmarkSend(b *testing.B) {
	ctx := context.Background()
	b.Run("direct", func(b *testing.B) {
		h := benchQueryHandler{}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			_, _ = h.Handle(ctx, benchQuery{ID: i})
		}
	})
	b.Run("interface", func(b *testing.B) {
		var h fxcqrs.RequestHandler[benchQuery, int] = benchQueryHandler{}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			_, _ = h.Handle(ctx, benchQuery{ID: i})
		}
	})
	b.Run("fxcqrs", func(b *testing.B) {
		m := benchMediator(b, fxcqrs.Config{}, 0)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := fxcqrs.Send[int](ctx, m, benchQuery{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkExec4Events compares Exec of a command that emits 4 events to a
// no-op handler with the same work fanned out by hand with errgroup.
func BenchmarkExec4Events(b *testing.B) {
	ctx := context.Background()
	b.Run("errgroup limit 3", func(b *testing.B) {
		h := benchEventHandler{}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			var g errgroup.Group
			g.SetLimit(3)
			for q := range 4 {
				g.Go(func() error { return h.Handle(ctx, benchEvent{OrderID: i, Qty: q}) })
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fxcqrs limit 3", func(b *testing.B) {
		m := benchMediator(b, limit(3), 4)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := fxcqrs.Exec(ctx, m, benchCmd{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fxcqrs sequential", func(b *testing.B) {
		m := benchMediator(b, sequential(), 4)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := fxcqrs.Exec(ctx, m, benchCmd{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
