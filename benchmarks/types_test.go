package benchmarks

import (
	"context"
	"iter"

	"github.com/fxcqrs/fxcqrs"
)

type (
	// Query is answered by QueryHandler.
	Query struct{ ID int }
	// Cmd makes EmitHandler emit N events.
	Cmd struct{ ID int }
	// Event is 16 bytes, like a real event: too large for Go to put in an
	// interface for free, as failures and observers do.
	Event struct{ OrderID, Seq int }
	// Ticks asks for N stream items.
	Ticks struct{ N int }
)

type QueryHandler struct{}

//go:noinline
func (QueryHandler) Handle(_ context.Context, q Query) (int, error) { return q.ID, nil }

type EmitHandler struct{ N int }

func (h EmitHandler) Handle(ctx context.Context, c Cmd) error {
	for i := range h.N {
		fxcqrs.Emit(ctx, Event{OrderID: c.ID, Seq: i})
	}
	return nil
}

// NopEventHandler is the no-op event handler of the fan-out benchmarks;
// several distinct types let an event have several handlers.
type (
	NopEventHandler  struct{}
	NopEventHandler2 struct{}
	NopEventHandler3 struct{}
	NopEventHandler4 struct{}
)

//go:noinline
func (NopEventHandler) Handle(context.Context, Event) error { return nil }

//go:noinline
func (NopEventHandler2) Handle(context.Context, Event) error { return nil }

//go:noinline
func (NopEventHandler3) Handle(context.Context, Event) error { return nil }

//go:noinline
func (NopEventHandler4) Handle(context.Context, Event) error { return nil }

// TickHandler yields N items, emitting one Event before each.
type TickHandler struct{}

func (TickHandler) Handle(ctx context.Context, t Ticks) iter.Seq2[int, error] {
	return func(yield func(int, error) bool) {
		for i := range t.N {
			fxcqrs.Emit(ctx, Event{Seq: i})
			if !yield(i, nil) {
				return
			}
		}
	}
}

// rawTicks is the same sequence without the mediator: the baseline.
func rawTicks(n int, handle func(Event)) iter.Seq2[int, error] {
	return func(yield func(int, error) bool) {
		for i := range n {
			handle(Event{Seq: i})
			if !yield(i, nil) {
				return
			}
		}
	}
}
