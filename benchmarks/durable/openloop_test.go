package durable

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// fakeLoadClock moves only when the load generator sleeps: to the time it
// sleeps until, as if the sleep had been exact.
type fakeLoadClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeLoadClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeLoadClock) SleepUntil(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if at.After(c.now) {
		c.now = at
	}
}

// The open loop sends each call at its due time, 1/rate apart from the
// schedule's start, whatever the calls take; and a rate is held only
// when the last call came within 5% of the schedule and the p99 within
// 50 ms.
func TestOpenLoopSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	clock := &fakeLoadClock{now: start}
	var (
		mu  sync.Mutex
		due []time.Duration
	)
	release := make(chan struct{})
	began := openLoopOn(clock, 4, 2000, func(at time.Time) {
		mu.Lock()
		due = append(due, at.Sub(start))
		n := len(due)
		mu.Unlock()
		if n < 4 {
			<-release // the earlier calls are still running as the later ones start
		} else {
			close(release)
		}
	})
	assert.Equal(t, start, began)
	assert.ElementsMatch(t, []time.Duration{0, 500 * time.Microsecond, time.Millisecond, 1500 * time.Microsecond}, due)

	schedule := 4 * 500 * time.Microsecond // 2 ms
	assert.True(t, held(2000, 4, start, start.Add(schedule+schedule/20), 50*time.Millisecond))
	assert.False(t, held(2000, 4, start, start.Add(schedule+schedule/10), time.Millisecond), "fell behind the rate")
	assert.False(t, held(2000, 4, start, start.Add(schedule), 51*time.Millisecond), "p99 above 50 ms")
}
