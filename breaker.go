package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

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

// Breaker is middleware that gives each handler it wraps a circuit breaker
// of its own: while the breaker is open, calls and invocations fail fast
// with an error matching [ErrBreakerOpen] without going further down the
// chain, or are answered by the handler's fallback (see [AsFallback]).
// Scope it as any middleware ([ForKinds], [ForMessages]).
//
// It records the outcome of the rest of the chain. Its place is
// [OrderBreaker], just inside [Logging] and outside every other
// middleware, so that by default a whole series of retries ([Retry]),
// within its [Timeout], is one outcome; [WithOrder] moves it. State changes
// are logged at warn level and reach the [Observer] as
// BreakerStateChanged.
func Breaker(cfg BreakerConfig) Middleware {
	return &breakers{cfg: cfg}
}

// breakers is the Breaker middleware before the mediator binds it: a
// breaker per handler comes into being at registration (see binder), so a
// call finds its handler's breaker without a lookup. Called outside a
// mediator, it keeps one per handler name.
type breakers struct {
	cfg     BreakerConfig
	unbound sync.Map // handler name → *breaker
}

// MiddlewareOrder places the breaker just inside Logging.
func (*breakers) MiddlewareOrder() int { return OrderBreaker }

// Handle runs call through the breaker of its handler.
func (bs *breakers) Handle(ctx context.Context, call Call, next Next) (any, error) {
	b, ok := bs.unbound.Load(call.Handler)
	if !ok {
		b, _ = bs.unbound.LoadOrStore(call.Handler, newBreaker(bs.cfg.withDefaults(), call.Handler, func(BreakerState, BreakerState) {}))
	}
	return b.(*breaker).Handle(ctx, call, next)
}

// bind gives one handler its own breaker, which logs and tells the
// observer of its state changes.
func (bs *breakers) bind(m *Mediator, handler, message string) (Middleware, error) {
	if err := bs.cfg.Validate(); err != nil {
		return nil, err
	}
	return newBreaker(bs.cfg.withDefaults(), handler, func(from, to BreakerState) {
		m.log.Warn("circuit breaker "+to.String(),
			zap.String("handler", handler), zap.String("messageType", message), zap.Stringer("from", from))
		if m.obs != nil {
			m.obs.BreakerStateChanged(context.Background(), BreakerStateChanged{Handler: handler, MessageType: message, From: from, To: to})
		}
	}), nil
}

// Handle is one handler's breaker as middleware: it refuses the call while
// open, and records the outcome of the rest of the chain otherwise.
func (b *breaker) Handle(ctx context.Context, _ Call, next Next) (any, error) {
	if !b.allow() {
		return nil, fmt.Errorf("fxcqrs: %s: %w", b.name, ErrBreakerOpen)
	}
	out, err := next(ctx)
	b.done(err)
	return out, err
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
