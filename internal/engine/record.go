package engine

import (
	"context"
	"reflect"
	"sync/atomic"

	"github.com/fxcqrs/fxcqrs/internal/typekey"
)

// Record is one emitted event waiting to be processed. value is an *E that
// points into the slab of the buffer the event was emitted into (see
// Buffer), or at a copy of its own: a pointer, so that holding it in an
// interface allocates nothing. A record must not outlive its buffer unless
// detached.
type Record struct {
	value any
	typ   eventType
}

// RecordOf makes a record of the event *p, which the caller keeps alive
// while the record is processed (Publish's event, on its stack). An event
// of an interface type is recorded by its dynamic type; RecordOf reports
// false when it is nil.
func RecordOf[E any](p *E) (Record, bool) {
	if isInterface[E]() {
		return DynamicRecord(any(*p))
	}
	return Record{value: p, typ: typeOf[E]{}}, true
}

// Type returns the event's type.
func (r Record) Type() reflect.Type { return r.typ.reflectType() }

// Key returns the key of the event's type: value holds an *E, whose type
// word is E's key.
func (r *Record) Key() typekey.Key { return typekey.OfPointee(&r.value) }

// Event returns the event itself, for what leaves the engine (failures,
// middleware, observers, recorders). It allocates, as boxing does.
func (r Record) Event() any { return r.typ.box(r.value) }

// Call calls h's Handle with the event, without recovering a panic: the
// innermost step of a Handler's Run.
func (r Record) Call(ctx context.Context, h *Handler) error {
	if c := h.direct.Load(); c != nil {
		return (*c)(ctx, r.value)
	}
	return r.typ.call(ctx, h, r.value)
}

// detach moves the record's event to a copy of its own, so that the record
// may outlive its buffer.
func (r *Record) detach() { r.value = r.typ.clone(r.value) }

// eventType knows an event type at compile time, so that the engine calls
// handlers of E without reflection. Its one implementation is the
// zero-size typeOf[E], which an interface holds without allocating.
type eventType interface {
	reflectType() reflect.Type
	call(ctx context.Context, h *Handler, p any) error
	box(p any) any
	clone(p any) any
}

type typeOf[E any] struct{}

func (typeOf[E]) reflectType() reflect.Type { return reflect.TypeFor[E]() }

// handlerOf is the Handle method of an event handler of E. It has the
// method set of the root package's EventHandler[E], so either asserts the
// same values.
type handlerOf[E any] interface {
	Handle(ctx context.Context, event E) error
}

// call is the first call of h, or any call of h by reflection: it installs
// h's direct call for the next ones.
func (typeOf[E]) call(ctx context.Context, h *Handler, p any) error {
	if h.iface {
		return h.callReflect(ctx, reflect.ValueOf(p).Elem())
	}
	eh, ok := h.Value.(handlerOf[E])
	if !ok {
		// Registration checked the Handle method, so this cannot happen
		// unless the registry is corrupt: fail the invocation loudly.
		return &mismatchError{handler: reflect.TypeOf(h.Value), event: reflect.TypeFor[E]()}
	}
	// A handler of a concrete type E only ever receives records of an *E,
	// however they were emitted, so its direct call can assert that.
	c := directCall(func(ctx context.Context, p any) error { return eh.Handle(ctx, *p.(*E)) })
	h.direct.Store(&c)
	return c(ctx, p)
}

func (typeOf[E]) box(p any) any { return *p.(*E) }

func (typeOf[E]) clone(p any) any {
	c := new(E)
	*c = *p.(*E)
	return c
}

type mismatchError struct{ handler, event reflect.Type }

func (e *mismatchError) Error() string {
	return "internal error: " + e.handler.String() + " does not handle " + e.event.String()
}

// Handler is one handler of an event type, as the engine sees it.
type Handler struct {
	// Value is the handler: it has a method Handle(context.Context, E) error.
	Value any
	// Name is the handler's full type name, for failures and logs.
	Name string
	// Run, when set, runs an invocation in the root's wrapping (middleware,
	// observer, recovery) instead of the engine calling Value directly. It
	// is nil on the hot path: no middleware and no observer.
	Run RunFunc
	// Root is the root package's own record of the handler.
	Root any

	direct atomic.Pointer[directCall] // set by its first typed call: see typeOf.call
	iface  bool                       // its event type is an interface: called by reflection
	method reflect.Value              // Value's Handle, for calls by reflection
}

// directCall calls a handler's Handle with p, an *E, as an E. Asserting
// the handler to a generic interface looks its itab up on every call in
// generic code, and a call through the record's type costs a second
// indirect call: a handler's direct call is made once, by its first
// invocation, and costs one.
type directCall func(ctx context.Context, p any) error

// RunFunc runs one invocation of a handler in frame f; queuedAt is when it
// was queued for a slot, zero when it was not. It must recover panics and
// drop the follow-ups of failed attempts from f (see Frame.Mark).
type RunFunc func(f *Frame, rec Record, h *Handler, queuedAt Mono) error

// Emit records event in frame f; the caller has checked f is not nil. An
// Emit into a closed frame (its handler returned) is late: it is logged and
// counted by f's engine, never silently lost.
func Emit[E any](f *Frame, event E) {
	if isInterface[E]() {
		emitDynamic(f, any(event), reflect.TypeFor[E]())
		return
	}
	b := f.lockEmit()
	if b == nil {
		f.buf.owner.eng.lateEmit(reflect.TypeFor[E]()) // closed: buf is no longer written
		return
	}
	var p *E
	if r := &b.slabs[0]; r.key == typekey.Of[E]() {
		p = r.s.(*slab[E]).add(event) // the buffer's first type: most often its only one
	} else {
		p = store(b, event)
	}
	b.recs = append(b.recs, Record{value: p, typ: typeOf[E]{}})
	f.state.v.Store(frameFilled) // unlockFilled, which does not inline here
}
