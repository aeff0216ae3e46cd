package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// One handler's circuit breaker: its configuration, its states, the error
// it refuses calls with and the rolling window it counts in. Breaker
// (breaker.go) is the middleware around it.

// ErrBreakerOpen is the error of a call or invocation refused because its
// handler's circuit breaker is open: the handler was not called. errors.Is
// matches it; a fallback, when the handler has one, answers instead.
var ErrBreakerOpen = errors.New("circuit breaker open")

// BreakerConfig configures a circuit breaker. Every field is optional; the
// zero value opens after 5 consecutive failures and probes again after 30
// seconds.
//
// The semantics are gobreaker's (github.com/sony/gobreaker): closed, the
// breaker counts outcomes in a window and opens when they trip it; open,
// it refuses every call until OpenDuration has passed; half-open, it lets
// HalfOpenProbes calls through, closes when they all succeed and opens
// again at the first failure. Unlike gobreaker it counts in a rolling
// window rather than resetting its counts every interval, and it reads
// time from Now, so that tests need no sleep.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker after this many failures in a
	// row. Default 5 when FailureRatio is 0; 0 with a FailureRatio turns it
	// off.
	ConsecutiveFailures int `json:"consecutiveFailures" yaml:"consecutiveFailures"`
	// FailureRatio opens the breaker when, over the last Window, at least
	// MinRequests calls were made and at least this fraction of them
	// failed. Default 0: off.
	FailureRatio float64 `json:"failureRatio" yaml:"failureRatio"`
	// MinRequests is the least number of calls in the Window for
	// FailureRatio to apply. Default 10.
	MinRequests int `json:"minRequests" yaml:"minRequests"`
	// Window is how far back FailureRatio looks. Default 1 minute.
	Window time.Duration `json:"window" yaml:"window"`
	// OpenDuration is how long the breaker stays open before it lets
	// probes through. Default 30s.
	OpenDuration time.Duration `json:"openDuration" yaml:"openDuration"`
	// HalfOpenProbes is how many calls a half-open breaker lets through;
	// all must succeed for it to close. Default 1.
	HalfOpenProbes int `json:"halfOpenProbes" yaml:"halfOpenProbes"`
	// IsFailure says whether a handler's error counts against it. Default:
	// every error but the caller's cancellation (context.Canceled),
	// ErrStopped and an *EventError (events of a nested call), which say
	// nothing of the handler's dependency.
	IsFailure func(error) bool `json:"-" yaml:"-"`
	// Now is the breaker's clock. Default time.Now; tests pass their own.
	Now func() time.Time `json:"-" yaml:"-"`
}

// BreakerState is a circuit breaker's state.
type BreakerState uint8

const (
	// BreakerClosed lets every call through and counts outcomes.
	BreakerClosed BreakerState = iota
	// BreakerOpen refuses every call with ErrBreakerOpen.
	BreakerOpen
	// BreakerHalfOpen lets a few probes through.
	BreakerHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", uint8(s))
}

// Validate reports every problem of c at once.
func (c BreakerConfig) Validate() error {
	var errs []error
	if c.ConsecutiveFailures < 0 {
		errs = append(errs, fmt.Errorf("fxcqrs.BreakerConfig: ConsecutiveFailures (consecutiveFailures) must not be negative: got %d", c.ConsecutiveFailures))
	}
	if c.FailureRatio < 0 || c.FailureRatio > 1 {
		errs = append(errs, fmt.Errorf("fxcqrs.BreakerConfig: FailureRatio (failureRatio) must be between 0 and 1: got %v", c.FailureRatio))
	}
	if c.MinRequests < 0 || c.HalfOpenProbes < 0 || c.Window < 0 || c.OpenDuration < 0 {
		errs = append(errs, errors.New("fxcqrs.BreakerConfig: MinRequests, HalfOpenProbes, Window and OpenDuration must not be negative"))
	}
	return errors.Join(errs...)
}

func (c BreakerConfig) withDefaults() BreakerConfig {
	if c.ConsecutiveFailures == 0 && c.FailureRatio == 0 {
		c.ConsecutiveFailures = 5
	}
	if c.MinRequests == 0 {
		c.MinRequests = 10
	}
	if c.Window == 0 {
		c.Window = time.Minute
	}
	if c.OpenDuration == 0 {
		c.OpenDuration = 30 * time.Second
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = 1
	}
	if c.IsFailure == nil {
		c.IsFailure = countsAsFailure
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// countsAsFailure is the default of BreakerConfig.IsFailure, and what a
// fallback never replaces.
func countsAsFailure(err error) bool {
	if err == nil {
		return false // before anything takes an address: success allocates nothing
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, ErrStopped) && !isEventError(err)
}

func isEventError(err error) bool {
	var evErr *EventError
	return errors.As(err, &evErr)
}

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
