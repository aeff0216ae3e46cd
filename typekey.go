package fxcqrs

import (
	"math/bits"
	"reflect"
	"unsafe"
)

// typeKey identifies a type by the address of the runtime's descriptor of
// its pointer type, *T. Go keeps one descriptor per type, which is what
// makes reflect.Type comparable; this reads the same identity without a
// reflect call, so a call's handler lookup costs a multiply and a load.
type typeKey uintptr

// keyOf is the key of T, computed at the call site without reflection: the
// type word of an interface holding a (*T)(nil). Boxing a nil pointer does
// not allocate.
func keyOf[T any]() typeKey {
	var p any = (*T)(nil)
	return typeKey((*[2]uintptr)(unsafe.Pointer(&p))[0])
}

// keyOfType is the key of t, computed at registration: the descriptor
// behind reflect.PointerTo(t), the same one keyOf finds.
func keyOfType(t reflect.Type) typeKey {
	pt := reflect.PointerTo(t)
	return typeKey((*[2]uintptr)(unsafe.Pointer(&pt))[1])
}

// typeTable is a read-only open-addressing map from typeKey to V, built
// once at registration. A lookup never allocates and never locks.
type typeTable[V any] struct {
	shift uint
	slots []typeSlot[V]
}

type typeSlot[V any] struct {
	key typeKey
	val V
}

// newTypeTable builds a table of the given entries at most half full.
func newTypeTable[V any](entries map[typeKey]V) typeTable[V] {
	size := 8
	for size < 2*len(entries) {
		size *= 2
	}
	t := typeTable[V]{shift: uint(64 - bits.TrailingZeros(uint(size))), slots: make([]typeSlot[V], size)}
	for k, v := range entries {
		i := t.index(k)
		for t.slots[i].key != 0 {
			i = (i + 1) & (len(t.slots) - 1)
		}
		t.slots[i] = typeSlot[V]{key: k, val: v}
	}
	return t
}

func (t *typeTable[V]) index(k typeKey) int {
	// Fibonacci hashing: descriptors are aligned, so the low bits carry
	// nothing; the multiply spreads the high ones.
	return int((uint64(k) * 0x9E3779B97F4A7C15) >> t.shift)
}

// get returns the value of k, or the zero V.
func (t *typeTable[V]) get(k typeKey) (V, bool) {
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
