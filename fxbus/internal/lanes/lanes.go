// Package lanes is the hand-over queue of the amqpbus and redisbus
// subscribers: what a subscription received from the broker and has not
// handed over yet, taken in the broker's order and, for a subscription
// that keeps order per key, one message of a key at a time.
package lanes

import "sort"

// Item is a received message waiting to be handed over.
type Item interface {
	// Seq orders items: the broker's order (a stream id, an arrival count).
	Seq() uint64
	// Key is the message's key, "" for none (no order to keep).
	Key() string
}

// Queue holds items in Seq order. With perKey, Next skips items whose key
// has one handed over and not yet settled (Done). Not safe for
// concurrent use: its owner locks.
type Queue[T Item] struct {
	perKey bool
	items  []T // ascending Seq
	busy   map[string]int
}

// New returns a Queue; perKey keeps one item of a key handed over at a
// time.
func New[T Item](perKey bool) *Queue[T] {
	return &Queue[T]{perKey: perKey, busy: map[string]int{}}
}

// Push adds it in its place by Seq.
func (q *Queue[T]) Push(it T) {
	i := sort.Search(len(q.items), func(i int) bool { return q.items[i].Seq() > it.Seq() })
	q.items = append(q.items, it)
	copy(q.items[i+1:], q.items[i:])
	q.items[i] = it
}

// Next removes and returns the first item whose key is free, and marks its
// key busy until Done; ok is false when there is none.
func (q *Queue[T]) Next() (it T, ok bool) {
	for i, c := range q.items {
		k := c.Key()
		if q.perKey && k != "" && q.busy[k] > 0 {
			continue
		}
		q.items = append(q.items[:i], q.items[i+1:]...)
		q.busy[k]++
		return c, true
	}
	return it, false
}

// Done frees key after the item Next returned was settled.
func (q *Queue[T]) Done(key string) {
	if q.busy[key]--; q.busy[key] <= 0 {
		delete(q.busy, key)
	}
}

// Remove removes and returns the items of key with a Seq above seq, in
// order.
func (q *Queue[T]) Remove(key string, seq uint64) []T {
	var out []T
	kept := q.items[:0]
	for _, c := range q.items {
		if c.Key() == key && c.Seq() > seq {
			out = append(out, c)
			continue
		}
		kept = append(kept, c)
	}
	clear(q.items[len(kept):])
	q.items = kept
	return out
}

// Drain removes and returns every item, in order.
func (q *Queue[T]) Drain() []T {
	out := q.items
	q.items = nil
	return out
}

// Len is the number of items waiting.
func (q *Queue[T]) Len() int { return len(q.items) }
