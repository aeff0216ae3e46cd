package fxcqrs

import (
	"context"
	"reflect"
	"sync"

	"go.uber.org/zap"
)

// eventRecord is one emitted event waiting to be processed.
type eventRecord struct {
	value  any
	typ    reflect.Type
	invoke invokeFunc
}

// invokeFunc calls an event handler with an event; it is an instantiation
// of invokeEvent, so calling a handler needs no reflection.
type invokeFunc func(ctx context.Context, handler, event any) error

func invokeEvent[E any](ctx context.Context, handler, event any) error {
	h, ok := handler.(EventHandler[E])
	if !ok {
		// Registration checked the Handle method, so this cannot happen
		// unless the registry is corrupt; fail the invocation loudly.
		return errHandlerMismatch(handler, reflect.TypeFor[E]())
	}
	return h.Handle(ctx, event.(E))
}

// frameKey is the context key of the innermost frame.
type frameKey struct{}

// frame is the context a handler runs with: one per call and one per event
// handler invocation. It collects what the handler emits, for this call
// only, so that handlers can be singletons shared by concurrent calls.
type frame struct {
	context.Context

	m     *Mediator // nil for a recorder made by RecordEvents
	depth int       // MaxDepth counts these
	slot  bool      // runs on an event slot: nested calls process events inline

	mu     sync.Mutex
	closed bool // the handler returned: later emits are late
	events []eventRecord
}

// Value returns the frame itself for frameKey, so Emit and nested calls
// find the innermost frame, and defers to the parent for any other key.
func (f *frame) Value(key any) any {
	if key == (frameKey{}) {
		return f
	}
	return f.Context.Value(key)
}

// frameOf returns the innermost frame of ctx, or nil.
func frameOf(ctx context.Context) *frame {
	if f, ok := ctx.(*frame); ok {
		return f
	}
	f, _ := ctx.Value(frameKey{}).(*frame)
	return f
}

// seal closes the frame and hands over what it collected. An Emit after
// seal is late: it is logged and counted, never silently lost.
func (f *frame) seal() []eventRecord {
	f.mu.Lock()
	f.closed = true
	events := f.events
	f.events = nil
	f.mu.Unlock()
	return events
}

// take hands over what the frame collected so far and keeps it open (a
// stream's events, item by item).
func (f *frame) take() []eventRecord {
	f.mu.Lock()
	events := f.events
	f.events = nil
	f.mu.Unlock()
	return events
}

// open reports whether the frame's handler is still running.
func (f *frame) open() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.closed
}

// callFrame is the frame of a Send, Exec, Publish or Stream call, with room
// for the first few events so that a typical handler emits without
// allocating a slice.
type callFrame struct {
	frame
	batch batch
	buf   [4]eventRecord
}

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
	f := frameOf(ctx)
	if f == nil {
		panic("fxcqrs.Emit: the context comes from no mediator call: pass the ctx the handler received " +
			"(or fxcqrs.RecordEvents in a test); the event " + reflect.TypeFor[E]().String() + " would be lost")
	}
	rec := eventRecord{value: event, typ: reflect.TypeFor[E](), invoke: invokeEvent[E]}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.m.lateEmit(rec)
		return
	}
	f.events = append(f.events, rec)
	f.mu.Unlock()
}

func (m *Mediator) lateEmit(rec eventRecord) {
	if m == nil {
		return
	}
	m.lateEmits.Add(1)
	m.log.Error("fxcqrs: event emitted after its handler returned; it is not processed",
		zap.String("event", typeName(rec.typ)),
		zap.Stack("stack"))
}

// EventRecorder collects the events a handler emits in a unit test. Make
// one with [RecordEvents].
type EventRecorder struct {
	f *frame
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
	f := &frame{Context: parent}
	return f, &EventRecorder{f: f}
}

// Events returns the recorded events in emit order.
func (r *EventRecorder) Events() []any {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	out := make([]any, len(r.f.events))
	for i, rec := range r.f.events {
		out[i] = rec.value
	}
	return out
}

// Reset forgets the recorded events.
func (r *EventRecorder) Reset() {
	r.f.mu.Lock()
	r.f.events = nil
	r.f.mu.Unlock()
}
