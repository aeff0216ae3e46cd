// Package fakeclock is the fake clock of the repository's tests and test
// kits (outboxtest.Clock, fxbus's tests): it moves only when told, and
// its timers fire when it moves past them. One implementation, so that
// every module's tests wait on time by the same rules.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a fake clock: Now and After in place of time.Now and
// time.After, moved by Advance.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []timer
}

type timer struct {
	at time.Time
	ch chan time.Time
}

// New returns a clock at start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives once the clock has moved d on (at
// once for d <= 0), as time.After does on the wall clock.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, timer{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock d on and fires the timers it passed.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at.After(c.now) {
			kept = append(kept, tm)
			continue
		}
		tm.ch <- c.now
	}
	c.timers = kept
}

// Pending returns how many timers have not fired yet: what waits on the
// clock. A test moves the clock once what it waits for is pending, not
// before (a move before the timer is asked for fires nothing).
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
