package upkeep_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/upkeep"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// A clean-up takes its place of the connection budget per batch and
// gives it back before the next: with a budget of one place, a taker
// that waits while the cleaner deletes a batch has the place after that
// batch, and the clean-up goes on once it is given back. (It took one
// place per clean-up: a large inbox's held it for its whole run, and
// the relay of every store waited.)
func TestInboxCleanerGivesItsPlaceBackBetweenBatches(t *testing.T) {
	t.Parallel()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	q := schema.NewQueries(d.Dialect, schema.WithDefaults(schema.Tables{}))
	now := time.Now()
	for i := range 3 {
		_, err := d.DB.Exec("INSERT INTO fxcqrs_inbox (handler, message_id, handled_ns) VALUES (?, ?, ?)",
			"h", fmt.Sprint(i), now.Add(-2*time.Hour).UnixNano())
		require.NoError(t, err)
	}
	b := newOnePlace()
	inBatch, goOn := make(chan struct{}), make(chan struct{})
	var takes atomic.Int32
	acquire := func(ctx context.Context) (func(), error) {
		release, err := b.take(ctx)
		if err == nil && takes.Add(1) == 1 {
			close(inBatch) // the first batch holds the place until the test says
			<-goOn
		}
		return release, err
	}
	c := upkeep.NewInboxCleaner(d.DB, q, upkeep.InboxCleanerConfig{Retention: time.Hour, Batch: 1, Acquire: acquire},
		zaptest.NewLogger(t), func() time.Time { return now }, nil)

	type result struct {
		n   int64
		err error
	}
	cleaned := make(chan result, 1)
	go func() {
		n, err := c.Clean(context.Background())
		cleaned <- result{n, err}
	}()
	recv(t, inBatch)
	other := make(chan func(), 1)
	go func() {
		release, err := b.take(context.Background())
		assert.NoError(t, err)
		other <- release
	}()
	recv(t, b.waiting) // the other taker waits behind the first batch
	close(goOn)

	release := recv(t, other)
	assert.Equal(t, 2, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"),
		"the other taker has the place after the first batch, two to go")
	release()
	r := recv(t, cleaned)
	require.NoError(t, r.err)
	assert.Equal(t, int64(3), r.n)
	assert.Zero(t, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"))
	assert.Equal(t, int32(4), takes.Load(), "a place per statement: three batches of one, and the last, empty")
}

// onePlace is a connection budget of one place, handed to its takers in
// the order they came: a taker that waits has it at the next release,
// before any that comes later.
type onePlace struct {
	waiting chan struct{} // told each time a taker begins to wait

	mu    sync.Mutex
	held  bool
	queue []chan struct{}
}

func newOnePlace() *onePlace { return &onePlace{waiting: make(chan struct{}, 16)} }

// take is an upkeep.Acquire; ctx is not watched: the test's takers all
// have their turn.
func (b *onePlace) take(context.Context) (func(), error) {
	b.mu.Lock()
	if !b.held {
		b.held = true
		b.mu.Unlock()
		return b.releaser(), nil
	}
	turn := make(chan struct{})
	b.queue = append(b.queue, turn)
	b.mu.Unlock()
	b.waiting <- struct{}{}
	<-turn
	return b.releaser(), nil
}

func (b *onePlace) releaser() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if len(b.queue) == 0 {
				b.held = false
				return
			}
			close(b.queue[0]) // handed over: still held
			b.queue = b.queue[1:]
		})
	}
}

// recv is the next value of ch, or the test's failure after ten seconds.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing came in ten seconds")
		panic("unreachable")
	}
}
