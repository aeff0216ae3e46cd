package fxbus

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/zap"
)

// Config is what a Bus is made of. Every field is optional.
type Config struct {
	// Publisher publishes routed events and dead letters: any Watermill
	// publisher (NATS JetStream, RabbitMQ, Kafka, Redis Streams, SQL).
	// Required when there are routes or subscriptions, unless Subscriber
	// is nil too: then both are the in-process broker (see [Embedded]).
	Publisher message.Publisher
	// Subscriber consumes the subscribed topics. Required when there are
	// subscriptions, with the same exception.
	Subscriber message.Subscriber
	// Logger logs, Watermill's router included. Default: none.
	Logger *zap.Logger
	// Marshaler encodes events. Default: JSON.
	Marshaler Marshaler
	// Propagators carry what a call's context holds (a tenant, the trace
	// context) in each message's metadata to its handlers. Default: none.
	Propagators []Propagator
	// Tracer follows each message through spans (the otel module's).
	// Default: none, at no cost.
	Tracer Tracer
	// DeadLetters records each message a subscription dead-letters, beside
	// its dead letter topic (the outbox module records them in SQL, for
	// the repair tools). Default: none.
	DeadLetters DeadLetterRecorder
	// Now is the bus's clock: the time a message's deliver-by counts from
	// ([DeliverWithin]) and the time a subscription compares it with.
	// Default: time.Now.
	Now func() time.Time
	// Limiter keeps the budgets of the subscriptions' rate limits (see
	// RateLimit): the outbox's shared limiter keeps them in the database,
	// for every replica at once. Default: one of the bus's own, in the
	// process ([NewLimiter]), so that each replica has the whole budget.
	Limiter Limiter
	// After is the bus's timer, on the clock of Now: what a message over
	// its rate limit waits on (see RateLimit). Default: time.After.
	After func(d time.Duration) <-chan time.Time
	// Tenants maps the tenant a received message names
	// ([MetadataTenant]) to a known one; a message of a tenant it does not
	// know is dead-lettered, unhandled. Default: none, and then every
	// message that names a tenant is dead-lettered: only messages without
	// one (the default tenant's) are handled.
	Tenants Tenants
	// Upcasters bring stored and received messages of older versions of
	// their event types to the current ones (see [Upcaster]). Default: none.
	Upcasters []Upcaster
}

// DeadLetterRecorder records a message a subscription of topic
// dead-lettered, with why. An error is logged; the message goes to its
// dead letter topic all the same.
type DeadLetterRecorder interface {
	RecordDeadLetter(ctx context.Context, topic string, msg *message.Message, reason error) error
}
