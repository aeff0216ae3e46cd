package ownership

import (
	"sync"
	"time"
)

// validity is, by lane, until when a held lane counts as held.
type validity struct {
	mu    sync.Mutex
	until map[int]time.Time
}

func newValidity() *validity { return &validity{until: map[int]time.Time{}} }

func (v *validity) set(n int, t time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if t.IsZero() {
		delete(v.until, n)
		return
	}
	v.until[n] = t
}

func (v *validity) get(n int) time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.until[n]
}
