package fxcqrs

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"time"
)

// The built-in middleware's positions: logging outermost, so that it sees
// what the caller sees; the circuit breaker next, so that everything
// inside it is one outcome; timeouts outside retries, so that a deadline
// bounds all attempts together. Panic recovery is not a middleware: it is
// always on.
const (
	OrderLogging = -100
	OrderBreaker = -50
	OrderTimeout = 100
	OrderRetry   = 200
)

// Timeouts are the deadlines Timeout sets, per kind; 0 sets none.
// In JSON and YAML each is a duration string ("2s") or nanoseconds.
type Timeouts struct {
	// Request bounds each Send's handler (its events run after, under
	// their own deadline).
	Request time.Duration `json:"request" yaml:"request"`
	// Command bounds each Exec's handler.
	Command time.Duration `json:"command" yaml:"command"`
	// Stream bounds a whole Stream iteration.
	Stream time.Duration `json:"stream" yaml:"stream"`
	// Event bounds each event handler invocation, retries included.
	Event time.Duration `json:"event" yaml:"event"`
}

func (t Timeouts) of(k Kind) time.Duration {
	switch k {
	case KindRequest:
		return t.Request
	case KindCommand:
		return t.Command
	case KindStream:
		return t.Stream
	case KindEvent:
		return t.Event
	}
	return 0
}

// Timeout gives calls and invocations a deadline, per kind. A handler
// sees it on its context and must honour it: Go cannot stop a goroutine
// from outside. A request's deadline covers its handler only; its events
// run after it, under their own. Calls of kinds without a timeout are not
// wrapped at all.
func Timeout(t Timeouts) Middleware { return timeout{t: t} }

type timeout struct{ t Timeouts }

func (timeout) MiddlewareOrder() int { return OrderTimeout }

func (t timeout) appliesTo(k Kind, _ reflect.Type) bool { return t.t.of(k) > 0 }

func (t timeout) Handle(ctx context.Context, call Call, next Next) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, t.t.of(call.Kind))
	defer cancel()
	return next(ctx)
}

// RetryPolicy configures Retry. Its zero value is usable: 3 attempts,
// backoff from 10ms doubling to at most 1s, 20% jitter, every error
// retried except the context's own. In JSON and YAML, Initial and Max are
// duration strings ("50ms") or nanoseconds.
type RetryPolicy struct {
	// Attempts is the total number of attempts, the first included.
	// Default 3.
	Attempts int `json:"attempts" yaml:"attempts"`
	// Initial is the wait before the second attempt. Default 10ms.
	Initial time.Duration `json:"initial" yaml:"initial"`
	// Max bounds each wait. Default 1s.
	Max time.Duration `json:"max" yaml:"max"`
	// Multiplier grows the wait after each attempt. Default 2.
	Multiplier float64 `json:"multiplier" yaml:"multiplier"`
	// Jitter is the fraction of each wait drawn at random, so that
	// handlers failing together do not retry together. Default 0.2; a
	// negative value means none.
	Jitter float64 `json:"jitter" yaml:"jitter"`
	// Retryable says whether an error is worth another attempt. Default:
	// every error but context.Canceled and context.DeadlineExceeded.
	Retryable func(error) bool `json:"-" yaml:"-"`
}

// Retry retries failed event handler invocations with exponential backoff
// and jitter. It wraps event handlers only. Attempts and waits happen
// inside the invocation, on its slot: retries never let more than
// MaxConcurrentHandlers run. The follow-up events of a failed attempt are
// dropped; only the successful attempt's are processed. A wait ends early,
// with the last error, when the context ends.
func Retry(p RetryPolicy) Middleware {
	if p.Attempts <= 0 {
		p.Attempts = 3
	}
	if p.Initial <= 0 {
		p.Initial = 10 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = time.Second
	}
	if p.Multiplier < 1 {
		p.Multiplier = 2
	}
	switch {
	case p.Jitter == 0:
		p.Jitter = 0.2
	case p.Jitter < 0:
		p.Jitter = 0
	case p.Jitter > 1:
		p.Jitter = 1
	}
	if p.Retryable == nil {
		p.Retryable = func(err error) bool {
			return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
		}
	}
	return retry{p: p}
}

type retry struct{ p RetryPolicy }

func (retry) MiddlewareOrder() int { return OrderRetry }

func (retry) appliesTo(k Kind, _ reflect.Type) bool { return k == KindEvent }

func (r retry) Handle(ctx context.Context, _ Call, next Next) (any, error) {
	wait := r.p.Initial
	for attempt := 1; ; attempt++ {
		out, err := next(ctx)
		if err == nil || attempt >= r.p.Attempts || !r.p.Retryable(err) || ctx.Err() != nil {
			return out, err
		}
		d := wait
		if r.p.Jitter > 0 {
			d -= time.Duration(rand.Float64() * r.p.Jitter * float64(wait))
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return out, err
		}
		wait = min(time.Duration(float64(wait)*r.p.Multiplier), r.p.Max)
	}
}
