// Package typekey identifies Go types by the address of their runtime
// descriptor, so that a call finds its handler with a multiply and a load
// instead of a reflect call or a map lookup. It keeps the unsafe reading
// of type descriptors out of the public package.
package typekey

import (
	"math/bits"
	"reflect"
	"unsafe"
)

// Key identifies a type by the address of the runtime's descriptor of
// its pointer type, *T. Go keeps one descriptor per type, which is what
// makes reflect.Type comparable; this reads the same identity without a
// reflect call, so a call's handler lookup costs a multiply and a load.
type Key uintptr

// Of is the key of T, computed at the call site without reflection: the
// type word of an interface holding a (*T)(nil). Boxing a nil pointer does
// not allocate.
func Of[T any]() Key {
	var p any = (*T)(nil)
	return Key((*[2]uintptr)(unsafe.Pointer(&p))[0])
}

// OfType is the key of t, computed at registration: the descriptor
// behind reflect.PointerTo(t), the same one Of finds.
func OfType(t reflect.Type) Key {
	pt := reflect.PointerTo(t)
	return Key((*[2]uintptr)(unsafe.Pointer(&pt))[1])
}

// Table is a read-only open-addressing map from Key to V, built
// once at registration. A lookup never allocates and never locks.
type Table[V any] struct {
	shift uint
	slots []slot[V]
}

type slot[V any] struct {
	key Key
	val V
}

// NewTable builds a table of the given entries at most half full.
func NewTable[V any](entries map[Key]V) Table[V] {
	size := 8
	for size < 2*len(entries) {
		size *= 2
	}
	t := Table[V]{shift: uint(64 - bits.TrailingZeros(uint(size))), slots: make([]slot[V], size)}
	for k, v := range entries {
		i := t.index(k)
		for t.slots[i].key != 0 {
			i = (i + 1) & (len(t.slots) - 1)
		}
		t.slots[i] = slot[V]{key: k, val: v}
	}
	return t
}

func (t *Table[V]) index(k Key) int {
	// Fibonacci hashing: descriptors are aligned, so the low bits carry
	// nothing; the multiply spreads the high ones.
	return int((uint64(k) * 0x9E3779B97F4A7C15) >> t.shift)
}

// Get returns the value of k, or the zero V.
func (t *Table[V]) Get(k Key) (V, bool) {
	if len(t.slots) == 0 {
		var zero V
		return zero, false
	}
	mask := len(t.slots) - 1
	for i := t.index(k); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.key == k {
			return s.val, true
		}
		if s.key == 0 {
			var zero V
			return zero, false
		}
	}
}

// OfPointee is the key of T for the interface *p holding a *T: its type
// word, read in place. It is how a record that keeps its event as a *E
// finds E's key for free.
func OfPointee(p *any) Key {
	return Key((*[2]uintptr)(unsafe.Pointer(p))[0])
}

// IsNil reports whether *v, of a pointer or interface type T, is nil or,
// for an interface, holds a nil pointer (or another nil pointer-shaped
// value: map, channel, func), without calling reflect. The caller checks
// T's kind once, at registration; for any other kind the answer is
// meaningless.
func IsNil[T any](v *T, pointer bool) bool {
	if pointer {
		return *(*unsafe.Pointer)(unsafe.Pointer(v)) == nil
	}
	// An interface value is two words, its type and its data; a
	// pointer-shaped value is stored in the data word itself.
	w := (*[2]unsafe.Pointer)(unsafe.Pointer(v))
	return w[0] == nil || w[1] == nil
}
