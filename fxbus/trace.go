package fxbus

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Tracer follows messages through spans of its own: the otel module's
// (fxcqrsotel/otelbus), after OpenTelemetry's messaging conventions. The
// bus calls it at each of a message's operations, and never when there is
// none (Config.Tracer nil: nothing is called, nothing allocated):
//
//   - Create when it makes a message of an event (for a route, a row of
//     the outbox, a durable or scheduled message), before the Propagators
//     inject: the context it returns is the message's creation context,
//     the one they carry to the message's handlers;
//   - Send around each publish of one topic's messages: a route's, or a
//     batch of the outbox's relay, hours later perhaps;
//   - Process around the handling of each message a handler gets (from a
//     subscription, or from the outbox's own delivery), after the
//     Propagators extracted: the context it returns is the handlers'.
type Tracer interface {
	// Create starts and ends the creation of msg, sent to topics (none:
	// this service's own delivery), and returns the context to carry in
	// its metadata.
	Create(ctx context.Context, msg *message.Message, topics []string) context.Context
	// Send starts the publish of msgs to topic; end ends it with its
	// outcome.
	Send(ctx context.Context, topic string, msgs []*message.Message) (end func(error))
	// Process starts the handling of msg, from topic; end ends it with
	// its outcome.
	Process(ctx context.Context, topic string, msg *message.Message) (_ context.Context, end func(error))
}

func noEnd(error) {}

// create is Tracer.Create, or ctx without a tracer.
func (b *Bus) create(ctx context.Context, msg *message.Message, topics []string) context.Context {
	if b.cfg.Tracer == nil {
		return ctx
	}
	return b.cfg.Tracer.Create(ctx, msg, topics)
}

// Send reports the publish of msgs to topic to the bus's Tracer, if any,
// and returns what ends it: the outbox's relay calls it around each
// batch.
func (b *Bus) Send(ctx context.Context, topic string, msgs []*message.Message) (end func(error)) {
	if b.cfg.Tracer == nil {
		return noEnd
	}
	return b.cfg.Tracer.Send(ctx, topic, msgs)
}

// Process returns ctx as the context of handling msg from topic, as a
// subscription gives it to its handlers (see WithMessage), with the
// bus's Tracer's processing started, and what ends it: for code that
// delivers a stored message to the mediator itself, such as the outbox's
// durable in-process delivery.
func (b *Bus) Process(ctx context.Context, topic string, msg *message.Message) (_ context.Context, end func(error)) {
	ctx = b.extract(ctx, msg)
	if b.cfg.Tracer == nil {
		return ctx, noEnd
	}
	return b.cfg.Tracer.Process(ctx, topic, msg)
}
