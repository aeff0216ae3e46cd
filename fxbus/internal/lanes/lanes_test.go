package lanes_test

import (
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus/internal/lanes"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type item struct {
	seq uint64
	key string
}

func (i item) Seq() uint64 { return i.seq }
func (i item) Key() string { return i.key }

func seqs(its []item) []uint64 {
	var out []uint64
	for _, it := range its {
		out = append(out, it.seq)
	}
	return out
}

// Items come out by Seq whatever order they went in; with perKey, a key
// with one out waits until Done, while other keys and keyless items go.
func TestQueue(t *testing.T) {
	t.Parallel()
	q := lanes.New[item](true)
	for _, it := range []item{{3, "a"}, {1, "a"}, {2, "b"}, {5, ""}, {4, ""}} {
		q.Push(it)
	}
	next := func() uint64 {
		it, ok := q.Next()
		require.True(t, ok)
		return it.seq
	}
	assert.Equal(t, uint64(1), next())
	assert.Equal(t, uint64(2), next())
	assert.Equal(t, uint64(4), next(), "3 waits: a is out")
	assert.Equal(t, uint64(5), next(), "keyless items never wait")
	_, ok := q.Next()
	assert.False(t, ok)
	q.Done("a")
	assert.Equal(t, uint64(3), next())

	q.Push(item{7, "a"})
	q.Push(item{6, "b"})
	q.Push(item{8, "a"})
	assert.Equal(t, []uint64{7, 8}, seqs(q.Remove("a", 3)))
	assert.Equal(t, 1, q.Len())
	assert.Equal(t, []uint64{6}, seqs(q.Drain()))
}

// Without perKey, a key's items all go.
func TestQueueWithoutKeys(t *testing.T) {
	t.Parallel()
	q := lanes.New[item](false)
	q.Push(item{2, "a"})
	q.Push(item{1, "a"})
	a, _ := q.Next()
	b, _ := q.Next()
	assert.Equal(t, []uint64{1, 2}, []uint64{a.seq, b.seq})
}
