package fxcqrs

import (
	"context"
	"reflect"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// Emit records an event from inside a handler. The mediator processes it
// after the handler returns successfully, as Config says; when the handler
// returns an error, its events are discarded with it.
//
// ctx must be the context the mediator passed to the handler, or one derived
// from it. Emit panics when ctx comes from no mediator call at all: that is
// a programming error, like a negative sync.WaitGroup counter, and an event
// must never vanish silently. An Emit after the handler returned (from a
// goroutine that outlived it) cannot join the finished call: it is logged at
// error level and counted in [Stats].LateEmits.
//
// In a unit test of a handler, [RecordEvents] makes a context that collects
// the events instead.
func Emit[E any](ctx context.Context, event E) {
	f := engine.FrameOf(ctx)
	if f == nil {
		panic("fxcqrs.Emit: the context comes from no mediator call: pass the ctx the handler received " +
			"(or fxcqrs.RecordEvents in a test); the event " + reflect.TypeFor[E]().String() + " would be lost")
	}
	engine.Emit(f, event)
}

// EventRecorder collects the events a handler emits in a unit test. Make
// one with [RecordEvents].
type EventRecorder struct {
	f *engine.Frame
}

// RecordEvents returns a context to pass to a handler under test and a
// recorder of what the handler emits with it:
//
//	ctx, rec := fxcqrs.RecordEvents(context.Background())
//	err := handler.Handle(ctx, PlaceOrder{ID: 7})
//	// rec.Events() is []any{OrderPlaced{ID: 7}, ...}
//
// The events are only recorded, never processed.
func RecordEvents(parent context.Context) (context.Context, *EventRecorder) {
	f := engine.NewRecorder(parent)
	return f, &EventRecorder{f: f}
}

// Events returns the recorded events in emit order.
func (r *EventRecorder) Events() []any { return r.f.Events() }

// Reset forgets the recorded events.
func (r *EventRecorder) Reset() { r.f.Reset() }
