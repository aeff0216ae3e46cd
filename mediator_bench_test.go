package fxcqrs_test

import (
	"context"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"golang.org/x/sync/errgroup"
)

type benchQuery struct{ ID int }

type benchQueryHandler struct{}

//go:noinline
func (benchQueryHandler) Handle(_ context.Context, q benchQuery) (int, error) { return q.ID, nil }

type benchCmd struct{ ID int }

// benchEvent is 16 bytes, like a real event: too large for Go to put in an
// interface for free, as failures and observers do.
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

type passThrough struct{}

func (passThrough) Handle(ctx context.Context, _ fxcqrs.Call, next fxcqrs.Next) (any, error) {
	return next(ctx)
}

// BenchmarkSendMiddleware: Send with 0, 1 and 3 pass-through middlewares,
// and with middleware registered for other messages only (which must cost
// nothing).
func BenchmarkSendMiddleware(b *testing.B) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mws  []fxcqrs.Middleware
	}{
		{"middlewares=0", nil},
		{"middlewares=3-elsewhere", []fxcqrs.Middleware{
			fxcqrs.ForKinds(passThrough{}, fxcqrs.KindEvent),
			fxcqrs.ForKinds(passThrough{}, fxcqrs.KindCommand),
			fxcqrs.Timeout(fxcqrs.Timeouts{Event: time.Second}),
		}},
		{"middlewares=1", []fxcqrs.Middleware{passThrough{}}},
		{"middlewares=3", []fxcqrs.Middleware{passThrough{}, passThrough{}, passThrough{}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := newMediator(b, fxcqrs.Config{},
				fxcqrs.WithRequestHandlers(benchQueryHandler{}), fxcqrs.WithMiddleware(tc.mws...))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := fxcqrs.Send[int](ctx, m, benchQuery{ID: i}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkExecObserved: Exec of 4 events under limit 3, bare and with an
// observer that does nothing (the cost of the hook itself).
func BenchmarkExecObserved(b *testing.B) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts []fxcqrs.Option
	}{
		{"bare", nil},
		{"observer", []fxcqrs.Option{fxcqrs.WithObserver(fxcqrs.NopObserver{})}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := newMediator(b, limit(3), append(tc.opts,
				fxcqrs.WithCommandHandlers(benchEmitter{n: 4}),
				fxcqrs.WithEventHandlers(benchEventHandler{}))...)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := fxcqrs.Exec(ctx, m, benchCmd{ID: i}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type benchFallback struct{}

//go:noinline
func (benchFallback) Handle(_ context.Context, q benchQuery) (int, error) { return -q.ID, nil }

// BenchmarkSendGuarded: what a closed circuit breaker and a fallback that
// does not run cost a Send, against the same handler without either, in
// the same run.
func BenchmarkSendGuarded(b *testing.B) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts []fxcqrs.Option
	}{
		{"bare", nil},
		{"breaker", []fxcqrs.Option{fxcqrs.WithMiddleware(fxcqrs.Breaker(fxcqrs.BreakerConfig{}))}},
		{"fallback", []fxcqrs.Option{fxcqrs.WithFallback(benchFallback{})}},
		{"breaker+fallback", []fxcqrs.Option{
			fxcqrs.WithMiddleware(fxcqrs.Breaker(fxcqrs.BreakerConfig{})),
			fxcqrs.WithFallback(benchFallback{}),
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m, err := fxcqrs.New(fxcqrs.Config{}, append(tc.opts, fxcqrs.WithRequestHandlers(benchQueryHandler{}))...)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for i := 1; b.Loop(); i++ {
				if _, err := fxcqrs.Send[int](ctx, m, benchQuery{ID: i}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
