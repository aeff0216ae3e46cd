package fxcqrs

import (
	"sync"
	"time"
)

// One handler's circuit breaker: its states and the rolling window it
// counts in. Breaker (breaker.go) is the middleware around it.

// buckets is how finely the rolling window is cut.
const buckets = 10

// breaker is one handler's circuit breaker.
type breaker struct {
	cfg     BreakerConfig
	name    string                      // the handler's
	changed func(from, to BreakerState) // logs and tells the observer
	mu      sync.Mutex
	state   BreakerState
	openAt  time.Time // when it opened
	probes  int       // half-open calls let through
	streak  int       // consecutive failures
	window  [buckets]windowBucket
}

// windowBucket counts the calls of one slice of the rolling window.
type windowBucket struct {
	start        time.Time
	calls, fails int
}

func newBreaker(cfg BreakerConfig, name string, changed func(from, to BreakerState)) *breaker {
	return &breaker{cfg: cfg, name: name, changed: changed}
}

// allow reports whether a call may go through now. A call let through must
// be followed by done.
func (b *breaker) allow() bool {
	b.mu.Lock()
	if b.state == BreakerClosed {
		b.mu.Unlock()
		return true // no clock needed
	}
	now := b.cfg.Now()
	from := b.state
	ok := true
	switch b.state {
	case BreakerOpen:
		if now.Sub(b.openAt) < b.cfg.OpenDuration {
			ok = false
			break
		}
		b.state, b.probes = BreakerHalfOpen, 0
		fallthrough
	case BreakerHalfOpen:
		if b.probes >= b.cfg.HalfOpenProbes {
			ok = false
			break
		}
		b.probes++
	}
	to := b.state
	b.mu.Unlock()
	if from != to {
		b.changed(from, to)
	}
	return ok
}

// done records the outcome of a call that allow let through.
func (b *breaker) done(err error) {
	failed := b.cfg.IsFailure(err)
	b.mu.Lock()
	if b.state == BreakerClosed && !failed && b.cfg.FailureRatio == 0 {
		b.streak = 0 // the common case: no window to count in, no clock
		b.mu.Unlock()
		return
	}
	now := b.cfg.Now()
	from := b.state
	switch b.state {
	case BreakerHalfOpen:
		if failed {
			b.trip(now)
		} else if b.probes--; b.probes <= 0 {
			b.reset(now)
		}
	case BreakerClosed:
		bk := b.bucket(now)
		bk.calls++
		if failed {
			bk.fails++
			b.streak++
		} else {
			b.streak = 0
		}
		if b.trips(now) {
			b.trip(now)
		}
	case BreakerOpen:
		// A call let through before the breaker opened: its outcome is
		// already stale.
	}
	to := b.state
	b.mu.Unlock()
	if from != to {
		b.changed(from, to)
	}
}

func (b *breaker) trips(now time.Time) bool {
	if b.cfg.ConsecutiveFailures > 0 && b.streak >= b.cfg.ConsecutiveFailures {
		return true
	}
	if b.cfg.FailureRatio == 0 {
		return false
	}
	var calls, fails int
	for i := range b.window {
		if now.Sub(b.window[i].start) < b.cfg.Window {
			calls += b.window[i].calls
			fails += b.window[i].fails
		}
	}
	return calls >= b.cfg.MinRequests && float64(fails) >= b.cfg.FailureRatio*float64(calls)
}

// bucket returns the window's bucket for now, emptied when it is stale.
func (b *breaker) bucket(now time.Time) *windowBucket {
	width := b.cfg.Window / buckets
	if width <= 0 {
		width = 1
	}
	start := now.Truncate(width)
	bk := &b.window[int(start.UnixNano()/int64(width))%buckets]
	if !bk.start.Equal(start) {
		*bk = windowBucket{start: start}
	}
	return bk
}

func (b *breaker) trip(now time.Time) {
	b.state, b.openAt, b.probes = BreakerOpen, now, 0
}

func (b *breaker) reset(time.Time) {
	b.state, b.streak, b.probes = BreakerClosed, 0, 0
	b.window = [buckets]windowBucket{}
}
