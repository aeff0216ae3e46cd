package fxcqrs

import (
	"context"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"go.uber.org/zap"
)

// eventRecord is one emitted event waiting to be processed. value is an
// *E that points into the slab of the buffer the event was emitted into
// (see eventBuf), or at a copy of its own: a pointer, so that holding it
// in an interface allocates nothing. A record must not outlive the buffer
// it came from unless detached.
type eventRecord struct {
	value any
	kind  eventKind
}

func (r eventRecord) typ() reflect.Type { return r.kind.typ() }

// event returns the event itself, for what leaves the engine (failures,
// middleware, observers, recorders). It allocates, as boxing does.
func (r eventRecord) event() any { return r.kind.event(r.value) }

// detach moves the record's event to a copy of its own, so that the record
// may outlive its buffer.
func (r *eventRecord) detach() { r.value = r.kind.clone(r.value) }

// eventKind knows an event type at compile time: it calls handlers of E
// without reflection. Its one implementation is the zero-size eventOf[E],
// which an interface holds without allocating.
type eventKind interface {
	key() typeKey
	typ() reflect.Type
	invoke(ctx context.Context, h *eventHandler, event any) error
	event(p any) any
	clone(p any) any
}

type eventOf[E any] struct{}

func (eventOf[E]) key() typeKey { return keyOf[E]() }

func (eventOf[E]) typ() reflect.Type { return reflect.TypeFor[E]() }

func (eventOf[E]) invoke(ctx context.Context, h *eventHandler, event any) error {
	// Asserting h.handler to EventHandler[E] looks its itab up on every
	// call in generic code; the first invocation keeps the result. This is
	// typedHandler's logic, spelled out: calling a shared generic helper
	// here measured 4% slower on a sequential 4-event Exec.
	typed, ok := h.typed.Load().(*EventHandler[E])
	if !ok {
		eh, ok := h.handler.(EventHandler[E])
		if !ok {
			// Registration checked the Handle method, so this cannot happen
			// unless the registry is corrupt; fail the invocation loudly.
			return errHandlerMismatch(h.handler, reflect.TypeFor[E]())
		}
		typed = &eh
		h.typed.Store(typed)
	}
	return (*typed).Handle(ctx, *event.(*E))
}

func (eventOf[E]) event(p any) any { return *p.(*E) }

func (eventOf[E]) clone(p any) any {
	c := new(E)
	*c = *p.(*E)
	return c
}

// frameKey is the context key of the innermost frame.
type frameKey struct{}

// frame is the context a handler runs with: one per call and one per event
// handler invocation. It collects what the handler emits, for this call
// only, so that handlers can be singletons shared by concurrent calls.
//
// A frame is allocated on every call, so it is kept to 32 bytes, the
// smallest size class that holds a context: its mediator is not a field
// but found through buf, which is never nil.
type frame struct {
	context.Context

	// buf is what the handler emitted, or its owner's empty home buffer
	// while it emitted nothing. It is written under state's lock only, and
	// never once the frame is closed, so a closed frame's buf (possibly a
	// buffer since reused by another frame) still tells its owner.
	buf    *eventBuf
	state  frameState
	depth  int16 // MaxDepth counts these
	slot   bool  // runs on an event slot: nested calls process events inline
	stripe uint8 // a call's: where it counts as in flight (see flight)
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

// eventBuf holds a frame's events. Buffers are pooled per owner: a frame
// hands its buffer over when it is sealed and never writes it again, so a
// buffer is reused only after everything it held was processed. Frames
// themselves are never reused: a goroutine that outlives its handler may
// still hold one.
//
// The events themselves are stored in slabs, one typed array per event
// type, which stay with the buffer when it is pooled: emitting an event
// copies it into a slab instead of boxing it on the heap. Records point
// into the slabs, so records that must outlive the buffer (background
// events, a concurrent call's follow-ups) are detached first.
type eventBuf struct {
	owner  *bufOwner // never changes
	recs   []eventRecord
	inline [8]eventRecord
	slabs  [4]slabRef // more event types than this get copies of their own
}

// slabRef is a buffer's slab of one event type.
type slabRef struct {
	key typeKey
	s   eventSlab // a *slab[E]
}

type eventSlab interface {
	// reset drops the slab's events and reports whether it is small
	// enough to keep for reuse.
	reset() (keep bool)
}

type slab[E any] struct{ items []E }

// maxSlabBytes bounds what a pooled buffer keeps of one event type.
const maxSlabBytes = 4 << 10

// add stores ev and returns where. A full slab starts a new array rather
// than growing: growing would move the events already pointed to.
func (s *slab[E]) add(ev E) *E {
	if len(s.items) == cap(s.items) {
		s.items = make([]E, 0, max(4, 2*cap(s.items)))
	}
	s.items = append(s.items, ev)
	return &s.items[len(s.items)-1]
}

func (s *slab[E]) reset() bool {
	clear(s.items)
	s.items = s.items[:0]
	var zero E
	return uintptr(cap(s.items))*unsafe.Sizeof(zero) <= maxSlabBytes
}

// store copies ev into the buffer and returns a pointer to the copy.
func store[E any](b *eventBuf, ev E) *E {
	k := keyOf[E]()
	free := -1
	for i := range b.slabs {
		r := &b.slabs[i]
		if r.key == k {
			return r.s.(*slab[E]).add(ev)
		}
		if r.s == nil && free < 0 {
			free = i // release may leave a hole before E's slab: look on
		}
	}
	if free >= 0 {
		s := new(slab[E])
		b.slabs[free] = slabRef{key: k, s: s}
		return s.add(ev)
	}
	c := new(E)
	*c = ev
	return c
}

// bufOwner pools the buffers of one mediator's frames (or of every
// recorder's) and has the home buffer they point to while empty.
type bufOwner struct {
	m    *Mediator // nil for recorders
	pool sync.Pool
	home eventBuf // always empty
}

func (o *bufOwner) init(m *Mediator) {
	o.m = m
	o.home.owner = o
	o.pool.New = func() any {
		b := &eventBuf{owner: o}
		b.recs = b.inline[:0]
		return b
	}
}

// recorders owns the buffers of RecordEvents frames.
var recorders = func() *bufOwner {
	o := new(bufOwner)
	o.init(nil)
	return o
}()

func (b *eventBuf) isHome() bool { return b == &b.owner.home }

// release returns the buffer to its owner's pool, dropping its references.
// Releasing nil or a home buffer does nothing.
func (b *eventBuf) release() {
	if b == nil || b.isHome() {
		return
	}
	clear(b.recs)
	b.recs = b.inline[:0]
	for i := range b.slabs {
		r := &b.slabs[i]
		if r.s != nil && !r.s.reset() {
			*r = slabRef{}
		}
	}
	b.owner.pool.Put(b)
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
// silently lost. buf keeps pointing at the handed-over buffer: see frame.
func (f *frame) seal() *eventBuf {
	if !f.state.close() || f.buf.isHome() {
		return nil
	}
	return f.buf
}

// take hands over what the frame collected so far and keeps it open (a
// stream's events, item by item).
func (f *frame) take() *eventBuf {
	if !f.state.lock() {
		return nil
	}
	b := f.buf
	if b.isHome() {
		b = nil
	} else {
		f.buf = &b.owner.home
	}
	f.state.unlock()
	return b
}

// mediator returns the mediator the frame belongs to (nil for a recorder).
func (f *frame) mediator() *Mediator {
	if !f.state.lock() {
		return f.buf.owner.m // closed: buf is no longer written
	}
	m := f.buf.owner.m
	f.state.unlock()
	return m
}

// mark returns how many events the frame holds, for truncate.
func (f *frame) mark() int {
	if !f.state.lock() {
		return 0
	}
	n := len(f.buf.recs)
	f.state.unlock()
	return n
}

// truncate drops the events emitted since mark: those of a failed attempt.
func (f *frame) truncate(mark int) {
	if !f.state.lock() {
		return
	}
	if len(f.buf.recs) > mark {
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
	if !f.state.lock() {
		f.buf.owner.m.lateEmit(reflect.TypeFor[E]()) // closed: buf is no longer written
		return
	}
	b := f.buf
	if b.isHome() {
		b = b.owner.pool.Get().(*eventBuf)
		f.buf = b
	}
	b.recs = append(b.recs, eventRecord{value: store(b, event), kind: eventOf[E]{}})
	f.state.unlock()
}

func (m *Mediator) lateEmit(typ reflect.Type) {
	if m == nil {
		return
	}
	m.lateEmits.Add(1)
	m.log.Error("fxcqrs: event emitted after its handler returned; it is not processed",
		zap.String("event", typeName(typ)),
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
	f := &frame{Context: parent, buf: &recorders.home}
	return f, &EventRecorder{f: f}
}

// Events returns the recorded events in emit order.
func (r *EventRecorder) Events() []any {
	if !r.f.state.lock() {
		return nil
	}
	defer r.f.state.unlock()
	recs := r.f.buf.recs
	out := make([]any, len(recs))
	for i, rec := range recs {
		out[i] = rec.event()
	}
	return out
}

// Reset forgets the recorded events.
func (r *EventRecorder) Reset() {
	if r.f.state.lock() {
		r.f.buf.release()
		r.f.buf = &recorders.home
		r.f.state.unlock()
	}
}
