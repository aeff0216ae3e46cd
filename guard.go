package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"go.uber.org/zap"
)

// guard is what stands around one handler: its circuit breaker and its
// fallback, either of them optional.
type guard struct {
	breaker  *breaker
	fallback *fallback
}

// breakerOrNil returns g's breaker, nil when g or its breaker is.
func (g *guard) breakerOrNil() *breaker {
	if g == nil {
		return nil
	}
	return g.breaker
}

type fallback struct {
	handler any
	name    string
	accepts func(error) bool
	event   engine.Handler // event fallbacks, for the engine's typed call
	typed   atomic.Value   // request, command and stream fallbacks: see typedFallback
}

// typedFallback returns g's fallback as an H, kept after the first call
// as typedHandler keeps a primary.
func typedFallback[H any](fb *fallback) H {
	if p, ok := fb.typed.Load().(*H); ok {
		return *p
	}
	h := fb.handler.(H) // registration checked the shape
	fb.typed.Store(&h)
	return h
}

// answers reports whether fb answers for the primary's err under ctx.
func (fb *fallback) answers(ctx context.Context, err error) bool {
	switch {
	case ctx.Err() != nil:
		return false // the caller's cancellation
	case errors.Is(err, ErrBreakerOpen):
		return true
	case !countsAsFailure(err):
		return false
	case fb.accepts == nil:
		return true
	}
	return fb.accepts(err)
}

// guarded runs primary through g's breaker and, when it fails in a way
// the fallback answers for, runs the fallback instead, in the same frame,
// the primary's events discarded. It reports the fallback used, if any.
func guarded[Res any](m *Mediator, f *engine.Frame, g *guard, handler string,
	primary, fallback func(context.Context) (Res, error),
) (res Res, used FallbackUsed, err error) {
	if g == nil {
		res, err = primary(f)
		return res, used, err
	}
	mark := 0
	if g.fallback != nil {
		mark = f.Mark()
	}
	if g.breaker == nil || g.breaker.allow() {
		res, err = primary(f)
		if g.breaker != nil {
			g.breaker.done(err)
		}
	} else {
		err = fmt.Errorf("fxcqrs: %s: %w", handler, ErrBreakerOpen)
	}
	if err == nil || g.fallback == nil || !g.fallback.answers(f, err) {
		return res, used, err
	}
	f.Truncate(mark) // the primary failed: its events go with it
	used = FallbackUsed{Handler: g.fallback.name, Cause: err}
	m.log.Warn("fallback answers for its primary",
		zap.String("handler", handler), zap.String("fallback", g.fallback.name), zap.Error(err))
	var fbErr error
	res, fbErr = fallback(f)
	if fbErr != nil {
		return res, used, &FallbackError{Primary: err, Fallback: fbErr}
	}
	return res, used, nil
}

// addBreakers takes the Breaker middleware out of every handler's chain
// and gives the handler a breaker of its own.
func (m *Mediator) addBreakers() error {
	var errs []error
	lift := func(chain []Middleware, g **guard, handler, message string) []Middleware {
		kept, cfg, err := liftBreaker(chain)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", handler, err))
		}
		if cfg == nil {
			return chain
		}
		if *g == nil {
			*g = &guard{}
		}
		(*g).breaker = newBreaker(*cfg, handler, func(from, to BreakerState) {
			m.log.Warn("circuit breaker "+to.String(),
				zap.String("handler", handler), zap.String("messageType", message), zap.Stringer("from", from))
			if m.obs != nil {
				m.obs.BreakerStateChanged(context.Background(), BreakerStateChanged{Handler: handler, MessageType: message, From: from, To: to})
			}
		})
		return kept
	}
	for _, e := range m.reg.handlers {
		e.chain = lift(e.chain, &e.guard, e.name, e.msgName)
		e.enders = endersOf(e.chain)
	}
	for _, hs := range m.reg.events {
		for _, h := range hs {
			h.chain = lift(h.chain, &h.guard, h.Name, h.msgName)
		}
	}
	return errors.Join(errs...)
}

// Breaker is middleware that gives each handler it applies to a circuit
// breaker of its own: while the breaker is open, calls and invocations
// fail fast with an error matching [ErrBreakerOpen] without calling the
// handler, or are answered by the handler's fallback (see [AsFallback]).
// Scope it as any middleware ([ForKinds], [ForMessages]).
//
// The mediator checks a handler's breaker before its middleware chain and
// records the chain's outcome, whatever the breaker's place among the
// middleware: a whole series of retries ([Retry]), within its [Timeout],
// is one outcome. A handler with a breaker and no other middleware stays
// on the fast path. State changes are logged at warn level and reach the
// [Observer] as BreakerStateChanged.
func Breaker(cfg BreakerConfig) Middleware {
	return &breakers{cfg: cfg}
}

// breakers is the Breaker middleware: its config, and a breaker per
// handler once the mediator has registered them.
type breakers struct {
	cfg BreakerConfig
}

// Handle runs next: the mediator takes breakers out of the chain at
// registration and checks them itself, so this only runs when the
// middleware is called directly.
func (bs *breakers) Handle(ctx context.Context, _ Call, next Next) (any, error) {
	return next(ctx)
}

func (bs *breakers) appliesTo(Kind, reflect.Type) bool { return true }

// breakerOf unwraps mw to a Breaker middleware, if it is one.
func breakerOf(mw Middleware) (*breakers, bool) {
	for {
		switch w := mw.(type) {
		case *breakers:
			return w, true
		case *wrapped:
			mw = w.Middleware
		default:
			return nil, false
		}
	}
}

// liftBreaker takes the Breaker middleware out of chain: it returns the
// chain without it (nil when nothing is left) and its config.
func liftBreaker(chain []Middleware) ([]Middleware, *BreakerConfig, error) {
	var (
		kept []Middleware
		cfg  *BreakerConfig
		errs []error
	)
	for _, mw := range chain {
		bs, ok := breakerOf(mw)
		if !ok {
			kept = append(kept, mw)
			continue
		}
		if cfg != nil {
			errs = append(errs, errors.New("two Breaker middleware apply to one handler"))
			continue
		}
		if err := bs.cfg.Validate(); err != nil {
			errs = append(errs, err)
		}
		c := bs.cfg.withDefaults()
		cfg = &c
	}
	return kept, cfg, errors.Join(errs...)
}
