package engine

import (
	"sync"
	"unsafe"

	"github.com/fxcqrs/fxcqrs/internal/typekey"
)

// Buffer holds a frame's events. Buffers are pooled per owner: a frame
// hands its buffer over when it is sealed and never writes it again, so a
// buffer is reused only after everything it held was processed. Frames
// themselves are never reused: a goroutine that outlives its handler may
// still hold one.
//
// The events are stored in slabs, one typed array per event type, which
// stay with the buffer while it is pooled: emitting an event copies it into
// a slab instead of boxing it on the heap. Records point into the slabs, so
// records that must outlive the buffer (background events, a concurrent
// call's follow-ups) are detached first.
type Buffer struct {
	owner  *owner // never changes
	recs   []Record
	inline [8]Record
	slabs  [4]slabRef // more event types than this get copies of their own
	link   *Buffer    // the next of a list of buffers held together

	// forwarded: middleware took these events out of the process itself
	// (an outbox wrote them): the Forward hook is not called for them.
	forwarded bool
}

// Forwarded reports whether middleware marked the events as taken out of
// the process (Frame.MarkForwarded).
func (b *Buffer) Forwarded() bool { return b.forwarded }

// Records returns the buffered events in emit order. They point into the
// buffer: they are valid until it is released.
func (b *Buffer) Records() []Record { return b.recs }

// slabRef is a buffer's slab of one event type.
type slabRef struct {
	key typekey.Key
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
func store[E any](b *Buffer, ev E) *E {
	k := typekey.Of[E]()
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

// owner pools the buffers of one engine's frames (or of every recorder's)
// and has the home buffer they point to while empty.
type owner struct {
	eng  *Engine // nil for recorders
	pool sync.Pool
	home Buffer // always empty
}

func (o *owner) init(e *Engine) {
	o.eng = e
	o.home.owner = o
	o.pool.New = func() any {
		b := &Buffer{owner: o}
		b.recs = b.inline[:0]
		return b
	}
}

func (b *Buffer) isHome() bool { return b == &b.owner.home }

// Release returns the buffer to its owner's pool, dropping its references.
// Releasing nil or a home buffer does nothing.
func (b *Buffer) Release() {
	if b == nil || b.isHome() {
		return
	}
	clear(b.recs)
	b.recs = b.inline[:0]
	b.forwarded = false
	for i := range b.slabs {
		r := &b.slabs[i]
		if r.s != nil && !r.s.reset() {
			*r = slabRef{}
		}
	}
	b.owner.pool.Put(b)
}

// releaseList releases a list of buffers linked by link.
func releaseList(b *Buffer) {
	for b != nil {
		next := b.link
		b.link = nil
		b.Release()
		b = next
	}
}
