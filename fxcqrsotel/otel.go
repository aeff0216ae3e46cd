// Package fxcqrsotel reports what an fxcqrs mediator does to
// OpenTelemetry: a span per call and per event handler invocation, the
// invocations children of their call so that an event fan-out shows as a
// tree, and metrics of counts, durations, invocations running and
// invocations waiting for a slot.
//
// It is a module of its own so that fxcqrs's users who do not use
// OpenTelemetry never depend on it.
//
//	obs, err := fxcqrsotel.New(otel.GetTracerProvider(), otel.GetMeterProvider())
//	m, err := fxcqrs.New(cfg, fxcqrs.WithObserver(obs), ...)
//
// Under fx, one line wires it: [Module] provides it as the fxcqrs.Observer
// that fxcqrs.Module takes, from the graph's trace.TracerProvider and
// metric.MeterProvider, or OpenTelemetry's global ones when the graph has
// none:
//
//	fx.New(fxcqrs.Module, fxcqrsotel.Module, ...)
//
// Durations are recorded in seconds, as the OpenTelemetry semantic
// conventions ask, into explicit buckets from 10µs to 30s ([Buckets]): the
// SDK's default bounds are made for milliseconds and would put every
// in-process call into their first bucket. A failure carries the
// conventions' error.type attribute ([ErrorTypeKey]); a success has none.
package fxcqrsotel

import (
	"context"
	"errors"
	"fmt"

	"github.com/fxcqrs/fxcqrs"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/fxcqrs/fxcqrs/fxcqrsotel"

// Attribute keys on spans and metrics.
const (
	// KindKey is the call's kind: request, command, stream, publish, event.
	KindKey = attribute.Key("fxcqrs.kind")
	// MessageKey is the message's full type name.
	MessageKey = attribute.Key("fxcqrs.message")
	// HandlerKey is the handler's full type name.
	HandlerKey = attribute.Key("fxcqrs.handler")
	// ErrorTypeKey is the semantic conventions' error.type, set on
	// failures only: see [ErrorType].
	ErrorTypeKey = attribute.Key("error.type")
)

// Buckets are the explicit bucket boundaries, in seconds, of the duration
// and wait histograms: from 10µs, an in-process call's scale, to 30s.
var Buckets = []float64{
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
}

// ErrorType is the low-cardinality class of err that error.type carries:
// the fxcqrs or context sentinel it matches ("fxcqrs.ErrNotStarted",
// "context.DeadlineExceeded"), "*fxcqrs.EventError" for a call whose
// events failed, "*fxcqrs.PanicError" for a panic, and otherwise err's Go
// type ("*myapp.OutOfStockError").
func ErrorType(err error) string {
	var evErr *fxcqrs.EventError
	if errors.As(err, &evErr) {
		return "*fxcqrs.EventError"
	}
	var pe *fxcqrs.PanicError
	if errors.As(err, &pe) {
		return "*fxcqrs.PanicError"
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return fmt.Sprintf("%T", err)
}

var sentinels = []struct {
	err  error
	name string
}{
	{fxcqrs.ErrNotStarted, "fxcqrs.ErrNotStarted"},
	{fxcqrs.ErrStopped, "fxcqrs.ErrStopped"},
	{fxcqrs.ErrNoHandler, "fxcqrs.ErrNoHandler"},
	{fxcqrs.ErrNotReady, "fxcqrs.ErrNotReady"},
	{fxcqrs.ErrMaxDepth, "fxcqrs.ErrMaxDepth"},
	{context.DeadlineExceeded, "context.DeadlineExceeded"},
	{context.Canceled, "context.Canceled"},
}

// Module provides the Observer as the fxcqrs.Observer that fxcqrs.Module
// takes. It uses the trace.TracerProvider and metric.MeterProvider in the
// graph when there are, OpenTelemetry's global ones otherwise.
var Module = fx.Module("fxcqrsotel",
	fx.Provide(fx.Annotate(fromGraph, fx.As(new(fxcqrs.Observer)))),
)

type providers struct {
	fx.In

	Tracer trace.TracerProvider `optional:"true"`
	Meter  metric.MeterProvider `optional:"true"`
}

func fromGraph(p providers) (*Observer, error) {
	if p.Tracer == nil {
		p.Tracer = otel.GetTracerProvider()
	}
	if p.Meter == nil {
		p.Meter = otel.GetMeterProvider()
	}
	return New(p.Tracer, p.Meter)
}

// Observer is an fxcqrs.Observer that reports to OpenTelemetry. Make one
// with New.
type Observer struct {
	tracer trace.Tracer

	calls, invocations        metric.Int64Counter
	callDuration, invDuration metric.Float64Histogram
	invWait                   metric.Float64Histogram
	invRunning, invWaiting    metric.Int64UpDownCounter
	breakerChanges            metric.Int64Counter
}

var _ fxcqrs.Observer = (*Observer)(nil)

// New returns an Observer that uses the given providers.
func New(tp trace.TracerProvider, mp metric.MeterProvider) (*Observer, error) {
	meter := mp.Meter(ScopeName)
	buckets := metric.WithExplicitBucketBoundaries(Buckets...)
	o := &Observer{tracer: tp.Tracer(ScopeName)}
	var errs [8]error
	o.calls, errs[0] = meter.Int64Counter("fxcqrs.calls",
		metric.WithDescription("Send, Exec, Stream and Publish calls, by outcome"), metric.WithUnit("{call}"))
	o.callDuration, errs[1] = meter.Float64Histogram("fxcqrs.call.duration",
		metric.WithDescription("Duration of calls, their events included"), metric.WithUnit("s"), buckets)
	o.invocations, errs[2] = meter.Int64Counter("fxcqrs.invocations",
		metric.WithDescription("Event handler invocations, by outcome"), metric.WithUnit("{invocation}"))
	o.invDuration, errs[3] = meter.Float64Histogram("fxcqrs.invocation.duration",
		metric.WithDescription("Duration of event handler invocations"), metric.WithUnit("s"), buckets)
	o.invWait, errs[4] = meter.Float64Histogram("fxcqrs.invocation.wait",
		metric.WithDescription("Time invocations waited for a slot"), metric.WithUnit("s"), buckets)
	o.invRunning, errs[5] = meter.Int64UpDownCounter("fxcqrs.invocations.running",
		metric.WithDescription("Event handler invocations running"), metric.WithUnit("{invocation}"))
	o.invWaiting, errs[6] = meter.Int64UpDownCounter("fxcqrs.invocations.waiting",
		metric.WithDescription("Event handler invocations waiting for a slot"), metric.WithUnit("{invocation}"))
	o.breakerChanges, errs[7] = meter.Int64Counter("fxcqrs.breaker.transitions",
		metric.WithDescription("Circuit breaker state changes, by handler and the state entered"), metric.WithUnit("{transition}"))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return o, nil
}

func callAttrs(c fxcqrs.Call) []attribute.KeyValue {
	attrs := []attribute.KeyValue{KindKey.String(c.Kind.String()), MessageKey.String(c.MessageType)}
	if c.Handler != "" {
		attrs = append(attrs, HandlerKey.String(c.Handler))
	}
	return attrs
}

// withError adds error.type to attrs when err is not nil.
func withError(attrs []attribute.KeyValue, err error) []attribute.KeyValue {
	if err != nil {
		attrs = append(attrs, ErrorTypeKey.String(ErrorType(err)))
	}
	return attrs
}

func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// CallStarted starts the call's span; its context is the parent of the
// call's handler and of its event invocations.
func (o *Observer) CallStarted(ctx context.Context, p fxcqrs.CallStarted) context.Context {
	ctx, _ = o.tracer.Start(ctx, p.Call.Kind.String()+" "+p.Call.MessageType,
		trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(callAttrs(p.Call)...))
	return ctx
}

// CallFinished ends the call's span and counts the call.
func (o *Observer) CallFinished(ctx context.Context, p fxcqrs.CallFinished) {
	fellBack(trace.SpanFromContext(ctx), p.Fallback)
	end(trace.SpanFromContext(ctx), p.Err)
	attrs := metric.WithAttributes(withError([]attribute.KeyValue{KindKey.String(p.Call.Kind.String()), MessageKey.String(p.Call.MessageType)}, p.Err)...)
	o.calls.Add(ctx, 1, attrs)
	o.callDuration.Record(ctx, p.Elapsed.Seconds(), attrs)
}

// InvocationQueued counts an invocation waiting for a slot.
func (o *Observer) InvocationQueued(ctx context.Context, _ fxcqrs.InvocationQueued) {
	o.invWaiting.Add(ctx, 1)
}

// InvocationStarted starts the invocation's span, a child of its call's.
func (o *Observer) InvocationStarted(ctx context.Context, p fxcqrs.InvocationStarted) context.Context {
	if p.Queued {
		o.invWaiting.Add(ctx, -1)
		o.invWait.Record(ctx, p.Waited.Seconds(), metric.WithAttributes(MessageKey.String(p.Call.MessageType)))
	}
	o.invRunning.Add(ctx, 1)
	ctx, _ = o.tracer.Start(ctx, "event "+p.Call.MessageType+" -> "+p.Call.Handler,
		trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(callAttrs(p.Call)...))
	return ctx
}

// InvocationFinished ends the invocation's span and counts it. An
// invocation that never started has no span of its own: it is recorded as
// an event on its call's span.
func (o *Observer) InvocationFinished(ctx context.Context, p fxcqrs.InvocationFinished) {
	attrs := []attribute.KeyValue{MessageKey.String(p.Call.MessageType), HandlerKey.String(p.Call.Handler)}
	if !p.Started {
		if p.Queued {
			o.invWaiting.Add(ctx, -1)
		}
		trace.SpanFromContext(ctx).AddEvent("fxcqrs.invocation_not_started", trace.WithAttributes(
			append(attrs, attribute.String("error", errString(p.Err)))...))
		o.invocations.Add(ctx, 1, metric.WithAttributes(withError(attrs, p.Err)...))
		return
	}
	o.invRunning.Add(ctx, -1)
	fellBack(trace.SpanFromContext(ctx), p.Fallback)
	end(trace.SpanFromContext(ctx), p.Err)
	set := metric.WithAttributes(withError(attrs, p.Err)...)
	o.invocations.Add(ctx, 1, set)
	o.invDuration.Record(ctx, p.Elapsed.Seconds(), set)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// BreakerStateKey is the state a circuit breaker entered: closed, open or
// half-open.
const BreakerStateKey = attribute.Key("fxcqrs.breaker.state")

// BreakerStateChanged counts a circuit breaker's state change, by handler
// and the state it entered.
func (o *Observer) BreakerStateChanged(ctx context.Context, p fxcqrs.BreakerStateChanged) {
	o.breakerChanges.Add(ctx, 1, metric.WithAttributes(
		HandlerKey.String(p.Handler), MessageKey.String(p.MessageType), BreakerStateKey.String(p.To.String())))
}

// FallbackKey is the fallback handler that answered for a call's or an
// invocation's primary handler.
const FallbackKey = attribute.Key("fxcqrs.fallback")

// fellBack records on span that a fallback answered, and why.
func fellBack(span trace.Span, used fxcqrs.FallbackUsed) {
	if used.Handler == "" {
		return
	}
	span.SetAttributes(FallbackKey.String(used.Handler))
	span.AddEvent("fxcqrs.fallback", trace.WithAttributes(
		FallbackKey.String(used.Handler),
		attribute.String("cause", errString(used.Cause)),
		ErrorTypeKey.String(ErrorType(used.Cause)),
	))
}
