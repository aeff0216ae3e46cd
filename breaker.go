package fxcqrs

import (
	"context"
	"fmt"
	"sync"

	"go.uber.org/zap"
)

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
