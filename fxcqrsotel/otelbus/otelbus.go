// Package otelbus follows fxbus's messages through OpenTelemetry: the W3C
// trace context (traceparent, tracestate, and baggage when set) travels
// in each message's metadata, through the outbox's rows and the broker,
// and each operation on a message is a span after the semantic
// conventions for messaging:
//
//   - create <topic>, kind producer, when a message is made of an event
//     (a route's, a row of the outbox, a durable or scheduled message),
//     a child of the emitting call's span: the message's creation
//     context, which its metadata carries;
//   - send <topic>, kind producer, around a publish: a route's, a child of
//     the emitting call; or a batch of the outbox's relay, a root of its
//     own (it runs in the background, maybe hours later) with a link to
//     each message's creation context;
//   - process <topic>, kind consumer, around the handling of one message
//     by a subscription (or the outbox's own delivery), a child of the
//     message's creation context: one message, pushed to one handler,
//     continues the trace that made it, so that one trace shows a request
//     becoming a command, an outbox row, a broker message and another
//     service's handlers (the conventions allow the parent for a single
//     message; a batch, which breaks parentage, gets links).
//
// A package of its own in the otel module, so that only its users
// compile Watermill and fxbus. Under fx, [Module] beside fxbus.Module:
//
//	fx.New(fxcqrs.Module, fxcqrsotel.Module, fxbus.Module, otelbus.Module, ...)
package otelbus

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
)

// Tracing is the fxbus.Propagator and fxbus.Tracer of OpenTelemetry.
// Make one with New.
type Tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	system attribute.KeyValue
}

var (
	_ fxbus.Propagator = (*Tracing)(nil)
	_ fxbus.Tracer     = (*Tracing)(nil)
)

// Config configures Tracing. Every field is optional.
type Config struct {
	// System is messaging.system on every span: "nats", "rabbitmq",
	// "redis", … Default "fxcqrs".
	System string
	// Propagator writes and reads the context in the metadata. Default:
	// W3C trace context and baggage.
	Propagator propagation.TextMapPropagator
}

// New returns the Tracing of tp.
func New(tp trace.TracerProvider, cfg Config) *Tracing {
	if cfg.System == "" {
		cfg.System = "fxcqrs"
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return &Tracing{tracer: tp.Tracer(fxcqrsotel.ScopeName), prop: cfg.Propagator, system: semconv.MessagingSystemKey.String(cfg.System)}
}

// Module provides Tracing as fxbus.Module's Tracer and one of its
// Propagators, from the graph's trace.TracerProvider (OpenTelemetry's
// global one when the graph has none) and an optional Config.
var Module = fx.Module("otelbus",
	fx.Provide(fromGraph),
	fx.Provide(fx.Annotate(func(t *Tracing) fxbus.Tracer { return t })),
	fxbus.AsPropagator(func(t *Tracing) *Tracing { return t }),
)

type params struct {
	fx.In

	Tracer trace.TracerProvider `optional:"true"`
	Config Config               `optional:"true"`
}

func fromGraph(p params) *Tracing {
	if p.Tracer == nil {
		p.Tracer = otel.GetTracerProvider()
	}
	return New(p.Tracer, p.Config)
}

// Inject writes ctx's trace context into md.
func (t *Tracing) Inject(ctx context.Context, md message.Metadata) {
	t.prop.Inject(ctx, propagation.MapCarrier(md))
}

// Extract returns ctx with md's trace context as its remote parent.
func (t *Tracing) Extract(ctx context.Context, md message.Metadata) context.Context {
	return t.prop.Extract(ctx, propagation.MapCarrier(md))
}

// Create records the creation of msg: a producer span, ended at once,
// whose context the message carries.
func (t *Tracing) Create(ctx context.Context, msg *message.Message, topics []string) context.Context {
	attrs := []attribute.KeyValue{t.system, semconv.MessagingOperationTypeCreate, semconv.MessagingOperationName("create"), semconv.MessagingMessageID(msg.UUID)}
	name := "create"
	if len(topics) == 1 {
		name += " " + topics[0]
		attrs = append(attrs, semconv.MessagingDestinationName(topics[0]))
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	span.End()
	return ctx
}

// Send starts the publish of msgs to topic: a producer span under ctx,
// linked to each message's creation context.
func (t *Tracing) Send(ctx context.Context, topic string, msgs []*message.Message) func(error) {
	links := make([]trace.Link, 0, len(msgs))
	for _, m := range msgs {
		if sc := trace.SpanContextFromContext(t.Extract(context.Background(), m.Metadata)); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	attrs := []attribute.KeyValue{t.system, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send"), semconv.MessagingDestinationName(topic)}
	if len(msgs) == 1 {
		attrs = append(attrs, semconv.MessagingMessageID(msgs[0].UUID))
	} else {
		attrs = append(attrs, semconv.MessagingBatchMessageCount(len(msgs)))
	}
	_, span := t.tracer.Start(ctx, "send "+topic, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...), trace.WithLinks(links...))
	return func(err error) { end(span, err) }
}

// Process starts the handling of msg from topic: a consumer span, a child
// of ctx, which holds the message's creation context as extracted.
func (t *Tracing) Process(ctx context.Context, topic string, msg *message.Message) (context.Context, func(error)) {
	ctx, span := t.tracer.Start(ctx, "process "+topic, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		t.system, semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(topic), semconv.MessagingMessageID(msg.UUID)))
	return ctx, func(err error) { end(span, err) }
}

func end(span trace.Span, err error) {
	if err != nil {
		span.SetAttributes(fxcqrsotel.ErrorTypeKey.String(fxcqrsotel.ErrorType(err)))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
