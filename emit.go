package fxcqrs

import (
	"context"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// eventRecord is one emitted event waiting to be processed.
type eventRecord struct {
	value any
	kind  eventKind
}

func (r eventRecord) typ() reflect.Type { return r.kind.typ() }

// eventKind knows an event type at compile time: it calls handlers of E
// without reflection. Its one implementation is the zero-size eventOf[E],
// which an interface holds without allocating.
type eventKind interface {
	key() typeKey
	typ() reflect.Type
	invoke(ctx context.Context, handler, event any) error
}

type eventOf[E any] struct{}

func (eventOf[E]) key() typeKey { return keyOf[E]() }

func (eventOf[E]) typ() reflect.Type { return reflect.TypeFor[E]() }

func (eventOf[E]) invoke(ctx context.Context, handler, event any) error {
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
	depth int32     // MaxDepth counts these
	state frameState
	slot  bool      // runs on an event slot: nested calls process events inline
	buf   *eventBuf // what the handler emitted; nil until its first Emit (guarded by state)
}

// frameState is a frame's lock and its closed flag in one word, so that
// sealing a frame, which every call does, is a single atomic operation. The
// lock only guards appends to buf, a few instructions long, so contenders
// yield instead of parking.
type frameState struct{ v atomic.Uint32 }

const (
	frameLocked uint32 = 1 << iota
	frameClosed
)

// lock takes the frame's lock and reports whether the frame is open. A
// closed frame is not locked.
func (s *frameState) lock() (open bool) { return s.leaveOpen(frameLocked) }

func (s *frameState) unlock() { s.v.Store(0) }

// close marks the frame closed once no Emit holds the lock. It reports
// whether it was open.
func (s *frameState) close() bool { return s.leaveOpen(frameClosed) }

// leaveOpen moves an open, unlocked frame to state next, waiting out an
// Emit that holds the lock; it reports false for a closed frame.
func (s *frameState) leaveOpen(next uint32) bool {
	for {
		v := s.v.Load()
		if v&frameClosed != 0 {
			return false
		}
		if v == 0 && s.v.CompareAndSwap(0, next) {
			return true
		}
		runtime.Gosched()
	}
}

// eventBuf holds a frame's events. Buffers are pooled: a frame hands its
// buffer over when it is sealed and never touches it again, so a buffer is
// reused only after everything it held was processed. Frames themselves are
// never reused: a goroutine that outlives its handler may still hold one.
type eventBuf struct {
	recs   []eventRecord
	inline [8]eventRecord
}

var eventBufs = sync.Pool{New: func() any {
	b := new(eventBuf)
	b.recs = b.inline[:0]
	return b
}}

// release returns the buffer to the pool, dropping its references.
func (b *eventBuf) release() {
	if b == nil {
		return
	}
	clear(b.recs)
	b.recs = b.inline[:0]
	eventBufs.Put(b)
}

// records returns the buffer's events; nil for a nil buffer.
func (b *eventBuf) records() []eventRecord {
	if b == nil {
		return nil
	}
	return b.recs
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

// seal closes the frame and hands over what it collected (nil when
// nothing). An Emit after seal is late: it is logged and counted, never
// silently lost.
func (f *frame) seal() *eventBuf {
	if !f.state.close() {
		return nil
	}
	b := f.buf
	f.buf = nil
	return b
}

// take hands over what the frame collected so far and keeps it open (a
// stream's events, item by item).
func (f *frame) take() *eventBuf {
	if !f.state.lock() {
		return nil
	}
	b := f.buf
	f.buf = nil
	f.state.unlock()
	return b
}

// mark returns how many events the frame holds, for truncate.
func (f *frame) mark() int {
	if !f.state.lock() {
		return 0
	}
	n := len(f.buf.records())
	f.state.unlock()
	return n
}

// truncate drops the events emitted since mark: those of a failed attempt.
func (f *frame) truncate(mark int) {
	if !f.state.lock() {
		return
	}
	if f.buf != nil && len(f.buf.recs) > mark {
		clear(f.buf.recs[mark:])
		f.buf.recs = f.buf.recs[:mark]
	}
	f.state.unlock()
}

// open reports whether the frame's handler is still running.
func (f *frame) open() bool {
	return f.state.v.Load()&frameClosed == 0
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
	rec := eventRecord{value: event, kind: eventOf[E]{}}
	if !f.state.lock() {
		f.m.lateEmit(rec)
		return
	}
	if f.buf == nil {
		f.buf = eventBufs.Get().(*eventBuf)
	}
	f.buf.recs = append(f.buf.recs, rec)
	f.state.unlock()
}

func (m *Mediator) lateEmit(rec eventRecord) {
	if m == nil {
		return
	}
	m.lateEmits.Add(1)
	m.log.Error("fxcqrs: event emitted after its handler returned; it is not processed",
		zap.String("event", typeName(rec.typ())),
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
	if !r.f.state.lock() {
		return nil
	}
	defer r.f.state.unlock()
	recs := r.f.buf.records()
	out := make([]any, len(recs))
	for i, rec := range recs {
		out[i] = rec.value
	}
	return out
}

// Reset forgets the recorded events.
func (r *EventRecorder) Reset() {
	if r.f.state.lock() {
		r.f.buf.release()
		r.f.buf = nil
		r.f.state.unlock()
	}
}
