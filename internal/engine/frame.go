package engine

import (
	"context"
	"reflect"
	"runtime"
	"sync/atomic"
)

// frameKey is the context key of the innermost frame.
type frameKey struct{}

// Frame is the context a handler runs with: one per call and one per event
// handler invocation. It collects what the handler emits, for this call
// only, so that handlers can be singletons shared by concurrent calls.
//
// A frame is allocated on every call, so it is kept to 32 bytes, the
// smallest size class that holds a context: its engine is not a field but
// found through buf, which is never nil.
type Frame struct {
	// Context is the parent of everything the handler does. The root may
	// replace it (an observer's span) before the handler runs.
	context.Context

	// buf is what the handler emitted, or its owner's empty home buffer
	// while it emitted nothing. It is written under state's lock only, and
	// never once the frame is closed, so a closed frame's buf (possibly a
	// buffer since reused by another frame) still tells its owner.
	buf    *Buffer
	state  frameState
	depth  int16 // MaxDepth counts these
	slot   bool  // runs on an event slot: nested calls process events inline
	stripe uint8 // a call's: where it counts as in flight (see flight)
}

// frameState is a frame's lock, its closed flag and whether it holds a
// buffer of its own, in one word, so that sealing a frame, which every call
// does, is a single atomic operation that also tells whether anything was
// emitted. The lock only guards appends to buf, a few instructions long,
// so contenders yield instead of parking.
type frameState struct{ v atomic.Uint32 }

const (
	frameLocked uint32 = 1 << iota
	frameClosed
	frameFilled // buf is not the home buffer; written under the lock
)

// lock takes the frame's lock and reports whether the frame is open. A
// closed frame is not locked.
func (s *frameState) lock() (open bool) {
	_, open = s.addWaiting(frameLocked)
	return open
}

// unlock releases the lock, keeping the filled flag.
func (s *frameState) unlock() { s.v.Store(s.v.Load() &^ frameLocked) }

// unlockFilled releases the lock of a frame that now holds a buffer.
func (s *frameState) unlockFilled() { s.v.Store(frameFilled) }

// unlockEmpty releases the lock of a frame back on its home buffer.
func (s *frameState) unlockEmpty() { s.v.Store(0) }

// tryAdd adds flag to an open, unlocked frame's state and returns the state
// it found; it fails on a closed or locked frame, and when it loses a race,
// for addWaiting to sort out. It is addWaiting's first attempt, small
// enough to inline: every Emit's one atomic operation (see lockEmit).
func (s *frameState) tryAdd(flag uint32) (uint32, bool) {
	v := s.v.Load()
	return v, v&(frameClosed|frameLocked) == 0 && s.v.CompareAndSwap(v, v|flag)
}

// addWaiting adds flag to an open, unlocked frame's state, waiting out an
// Emit that holds the lock, and returns the state it found; it reports
// false for a closed frame.
func (s *frameState) addWaiting(flag uint32) (uint32, bool) {
	for {
		v := s.v.Load()
		if v&frameClosed != 0 {
			return v, false
		}
		if v&frameLocked == 0 && s.v.CompareAndSwap(v, v|flag) {
			return v, true
		}
		runtime.Gosched()
	}
}

// lockEmit locks f for an Emit and returns the buffer to append to, taken
// from the pool for the frame's first event, or nil when f is closed. The
// caller appends and unlocks it as filled. It is not generic, unlike Emit:
// the frame's small methods inline here, and would not in Emit's
// instantiations in other packages.
func (f *Frame) lockEmit() *Buffer {
	if _, ok := f.state.tryAdd(frameLocked); !ok && !f.state.lock() {
		return nil // closed
	}
	b := f.buf
	if b.isHome() {
		b = b.owner.pool.Get().(*Buffer)
		f.buf = b
	}
	return b
}

// Value returns the frame itself for frameKey, so Emit and nested calls
// find the innermost frame, and defers to the parent for any other key.
func (f *Frame) Value(key any) any {
	if key == (frameKey{}) {
		return f
	}
	return f.Context.Value(key)
}

// FrameOf returns the innermost frame of ctx, or nil.
func FrameOf(ctx context.Context) *Frame {
	if f, ok := ctx.(*Frame); ok {
		return f // a handler's own ctx: inlined
	}
	return frameValue(ctx)
}

// frameValue is FrameOf's search up the context chain, kept out of line so
// that FrameOf inlines.
//
//go:noinline
func frameValue(ctx context.Context) *Frame {
	f, _ := ctx.Value(frameKey{}).(*Frame)
	return f
}

// Seal closes the frame and hands over what it collected (nil when
// nothing). An Emit after Seal is late: it is logged and counted, never
// silently lost. buf keeps pointing at the handed-over buffer: see Frame.
func (f *Frame) Seal() *Buffer {
	if f.state.v.CompareAndSwap(0, frameClosed) {
		return nil // open, unlocked and empty: the common case, inlined
	}
	return f.sealSlow()
}

func (f *Frame) sealSlow() *Buffer {
	old, open := f.state.addWaiting(frameClosed)
	if !open || old&frameFilled == 0 {
		return nil
	}
	return f.buf
}

// End seals f, the frame of a call, and returns what it collected, like
// Seal; when that is nothing, the call also leaves flight. It is how most
// calls end: one call where Seal and Leave make two.
func (e *Engine) End(f *Frame) *Buffer {
	if buf := f.Seal(); buf != nil {
		return buf
	}
	e.calls.leave(f.stripe)
	return nil
}

// Take hands over what the frame collected so far and keeps it open (a
// stream's events, item by item).
func (f *Frame) Take() *Buffer {
	if !f.state.lock() {
		return nil
	}
	b := f.buf
	if b.isHome() {
		b = nil
	} else {
		f.buf = &b.owner.home
	}
	f.state.unlockEmpty()
	return b
}

// Engine returns the engine the frame belongs to (nil for a recorder).
func (f *Frame) Engine() *Engine {
	if !f.state.lock() {
		return f.buf.owner.eng // closed: buf is no longer written
	}
	e := f.buf.owner.eng
	f.state.unlock()
	return e
}

// Mark returns how many events the frame holds, for Truncate.
func (f *Frame) Mark() int {
	if !f.state.lock() {
		return 0
	}
	n := len(f.buf.recs)
	f.state.unlock()
	return n
}

// Truncate drops the events emitted since Mark: those of a failed attempt.
func (f *Frame) Truncate(mark int) {
	if !f.state.lock() {
		return
	}
	if len(f.buf.recs) > mark {
		clear(f.buf.recs[mark:])
		f.buf.recs = f.buf.recs[:mark]
	}
	f.state.unlock()
}

// Withdraw removes the events for which take reports true from what the
// frame holds, keeping the others in their order, and returns the removed
// ones, boxed, in emit order (nil when none).
func (f *Frame) Withdraw(take func(reflect.Type) bool) []any {
	if !f.state.lock() {
		return nil
	}
	defer f.state.unlock()
	if f.buf.isHome() {
		return nil // nothing emitted; the home buffer is shared, never written
	}
	recs := f.buf.recs
	var out []any
	kept := recs[:0]
	for _, rec := range recs {
		if take(rec.Type()) {
			out = append(out, rec.Event())
			continue
		}
		kept = append(kept, rec)
	}
	clear(recs[len(kept):])
	f.buf.recs = kept
	return out
}

// MarkForwarded marks what the frame holds as taken out of the process
// by middleware: the Forward hook is not called for it.
func (f *Frame) MarkForwarded() {
	if !f.state.lock() {
		return
	}
	if !f.buf.isHome() {
		f.buf.forwarded = true
	}
	f.state.unlock()
}

// Open reports whether the frame's handler is still running.
func (f *Frame) Open() bool {
	return f.state.v.Load()&frameClosed == 0
}

// initInvocation makes f the frame of an event handler invocation at
// depth, under the call's context ctx. It holds a slot: nested calls made
// with it process their events inline.
func (f *Frame) initInvocation(ctx context.Context, e *Engine, depth int16) {
	f.Context = ctx
	f.buf = &e.bufs.home
	f.depth = depth
	f.slot = true
}

// recorders owns the buffers of recorder frames.
var recorders = func() *owner {
	o := new(owner)
	o.init(nil)
	return o
}()

// NewRecorder returns a frame that only collects what is emitted into it,
// for a unit test of a handler: nothing is ever processed.
func NewRecorder(parent context.Context) *Frame {
	return &Frame{Context: parent, buf: &recorders.home}
}

// Events returns what the frame holds, boxed, in emit order.
func (f *Frame) Events() []any {
	if !f.state.lock() {
		return nil
	}
	defer f.state.unlock()
	recs := f.buf.recs
	out := make([]any, len(recs))
	for i, rec := range recs {
		out[i] = rec.Event()
	}
	return out
}

// Reset drops what the frame holds.
func (f *Frame) Reset() {
	if f.state.lock() {
		f.buf.Release()
		f.buf = &f.buf.owner.home
		f.state.unlockEmpty()
	}
}
