package fxbus

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"
)

// Propagator carries something a call's context holds across a hop, in a
// message's metadata: a tenant or user id, or (the otel module's) the
// trace context. The bus calls Inject whenever it makes a message of an
// event (a route's publish, a row of the outbox, a durable event, a
// scheduled message: each keeps the metadata until it is delivered, hours
// later if need be) and Extract when a handler gets one (a subscription,
// the outbox's own delivery), so that the handling context holds again
// what the emitting one held. Correlation and causation ids travel without
// one.
//
// Inject must write only keys of its own, and Extract must not fail:
// metadata it does not understand (a message from an older service) is
// no context of its.
type Propagator interface {
	// Inject writes what ctx holds into md.
	Inject(ctx context.Context, md message.Metadata)
	// Extract returns ctx holding what md carries.
	Extract(ctx context.Context, md message.Metadata) context.Context
}

// AsPropagator registers a constructor of a Propagator with fxbus.Module,
// which applies every registered one, in an unspecified order.
func AsPropagator(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.As(new(Propagator)), fx.ResultTags(`group:"fxbus.propagators"`)))
}

// inject writes what the propagators carry from ctx into msg.
func (b *Bus) inject(ctx context.Context, msg *message.Message) {
	for _, p := range b.cfg.Propagators {
		p.Inject(ctx, msg.Metadata)
	}
}

// extract returns the context of handling msg: its chain (see
// withInbound) and what the propagators carry.
func (b *Bus) extract(ctx context.Context, msg *message.Message) context.Context {
	ctx = withInbound(ctx, msg)
	for _, p := range b.cfg.Propagators {
		ctx = p.Extract(ctx, msg.Metadata)
	}
	return ctx
}
