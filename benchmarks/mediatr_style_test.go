package benchmarks

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/fxcqrs/fxcqrs"
)

// Go-MediatR cannot be fetched from this project's module proxy, so this
// file re-implements the technique its Send uses, to measure it in the same
// run as fxcqrs: a package-level map keyed by reflect.TypeOf(request),
// looked up on every call, then a type assertion to the typed handler. It
// collects no events and tracks no lifecycle.

var styleHandlers = map[reflect.Type]any{reflect.TypeFor[Query](): QueryHandler{}}

func styleSend[Req, Res any](ctx context.Context, req Req) (Res, error) {
	h, ok := styleHandlers[reflect.TypeOf(req)]
	if !ok {
		var zero Res
		return zero, errors.New("no handler")
	}
	typed, ok := h.(fxcqrs.RequestHandler[Req, Res])
	if !ok {
		var zero Res
		return zero, errors.New("wrong handler")
	}
	return typed.Handle(ctx, req)
}

// BenchmarkSendPeer compares Send with the Go-MediatR technique. Request
// IDs start at 1,000: Go keeps small integers boxed for free, real IDs are
// not small.
func BenchmarkSendPeer(b *testing.B) {
	ctx := context.Background()
	b.Run("mediatr-style", func(b *testing.B) {
		b.ReportAllocs()
		for i := 1000; b.Loop(); i++ {
			if _, err := styleSend[Query, int](ctx, Query{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fxcqrs", func(b *testing.B) {
		m := newMediator(b, fxcqrs.Config{}, fxcqrs.WithRequestHandlers(QueryHandler{}))
		b.ReportAllocs()
		for i := 1000; b.Loop(); i++ {
			if _, err := fxcqrs.Send[int](ctx, m, Query{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
