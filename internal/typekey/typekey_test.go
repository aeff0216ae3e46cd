package typekey

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
)

type keyNamed struct{ A int }

type keyGeneric[T any] struct{ V T }

// TestTypeKeysAgree: the key a call computes from its type parameter is
// the key registration computes from reflect, for every kind of type a
// message can have.
func TestTypeKeysAgree(t *testing.T) {
	t.Parallel()
	check := func(name string, fromGeneric Key, typ reflect.Type) {
		t.Helper()
		assert.Equal(t, fromGeneric, OfType(typ), name)
		assert.NotZero(t, fromGeneric, name)
	}
	check("named struct", Of[keyNamed](), reflect.TypeFor[keyNamed]())
	check("pointer", Of[*keyNamed](), reflect.TypeFor[*keyNamed]())
	check("generic", Of[keyGeneric[string]](), reflect.TypeFor[keyGeneric[string]]())
	check("unnamed struct", Of[struct{ B string }](), reflect.TypeFor[struct{ B string }]())
	check("interface", Of[io.Reader](), reflect.TypeFor[io.Reader]())
	check("basic", Of[int](), reflect.TypeFor[int]())
	check("slice", Of[[]byte](), reflect.TypeFor[[]byte]())
	check("never pointed to elsewhere", Of[context.CancelFunc](), reflect.TypeFor[context.CancelFunc]())

	assert.NotEqual(t, Of[keyNamed](), Of[*keyNamed](), "T and *T are different keys")

	held := func(p any) *any { return &p }
	assert.Equal(t, Of[keyNamed](), OfPointee(held(&keyNamed{})), "a *T held in an interface")
	assert.Equal(t, Of[*keyNamed](), OfPointee(held(new(*keyNamed))))
	assert.Equal(t, Of[io.Reader](), OfPointee(held(new(io.Reader))))
	assert.NotEqual(t, Of[keyGeneric[int]](), Of[keyGeneric[string]]())
}

func TestTypeTable(t *testing.T) {
	t.Parallel()
	var empty Table[int]
	_, ok := empty.Get(Of[int]())
	assert.False(t, ok)

	types := []reflect.Type{
		reflect.TypeFor[int](), reflect.TypeFor[string](), reflect.TypeFor[keyNamed](),
		reflect.TypeFor[*keyNamed](), reflect.TypeFor[[]int](), reflect.TypeFor[map[string]int](),
		reflect.TypeFor[keyGeneric[int]](), reflect.TypeFor[keyGeneric[bool]](), reflect.TypeFor[error](),
	}
	entries := map[Key]int{}
	for i, typ := range types {
		entries[OfType(typ)] = i
	}
	table := NewTable(entries)
	for i, typ := range types {
		got, ok := table.Get(OfType(typ))
		assert.True(t, ok, typ.String())
		assert.Equal(t, i, got, typ.String())
	}
	_, ok = table.Get(Of[float64]())
	assert.False(t, ok)
}

// BenchmarkTypeTable isolates the lookup from the rest of a call: the probe
// count does not grow with the number of registered types. It cycles
// through every key, so at 10,000 keys the figure also measures cache
// misses, which a real application's few hot types do not pay.
func BenchmarkTypeTable(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprint("types=", n), func(b *testing.B) {
			// Descriptor-like keys: aligned, close together.
			entries := make(map[Key]int, n)
			keys := make([]Key, 0, n)
			for i := range n {
				k := Key(0x7f0000000000 + uintptr(i)*96)
				entries[k] = i
				keys = append(keys, k)
			}
			table := NewTable(entries)
			b.ResetTimer()
			sum := 0
			for i := 0; b.Loop(); i++ {
				v, _ := table.Get(keys[i%n])
				sum += v
			}
			_ = sum
		})
	}
}

// TestIsNil: nil and non-nil pointers and interfaces, empty and not, and
// an interface holding a nil pointer (which is not a nil interface).
func TestIsNil(t *testing.T) {
	t.Parallel()
	var p *keyNamed
	assert.True(t, IsNil(&p, true))
	p = &keyNamed{}
	assert.False(t, IsNil(&p, true))

	var r io.Reader
	assert.True(t, IsNil(&r, false))
	r = (*keyReader)(nil)
	assert.True(t, IsNil(&r, false), "a nil pointer in an interface counts as nil")
	r = &keyReader{}
	assert.False(t, IsNil(&r, false))
	var e any
	assert.True(t, IsNil(&e, false))
	e = 0
	assert.False(t, IsNil(&e, false))
	e = struct{}{}
	assert.False(t, IsNil(&e, false), "a zero-size value is not nil")
}

type keyReader struct{ _ int }

func (*keyReader) Read([]byte) (int, error) { return 0, io.EOF }
