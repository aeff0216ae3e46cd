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
// Under fx, provide it as the fxcqrs.Observer that fxcqrs.Module takes:
//
//	fx.Provide(fx.Annotate(fxcqrsotel.New, fx.As(new(fxcqrs.Observer))))
package fxcqrsotel

import (
	"context"
	"errors"

	"github.com/fxcqrs/fxcqrs"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/fxcqrs/fxcqrs/otel"

// Attribute keys on spans and metrics.
const (
	KindKey    = attribute.Key("fxcqrs.kind")
	MessageKey = attribute.Key("fxcqrs.message")
	HandlerKey = attribute.Key("fxcqrs.handler")
	OutcomeKey = attribute.Key("fxcqrs.outcome") // "ok", "error" or "not_started"
)

// Observer is an fxcqrs.Observer that reports to OpenTelemetry. Make one
// with New.
type Observer struct {
	tracer trace.Tracer

	calls, invocations        metric.Int64Counter
	callDuration, invDuration metric.Float64Histogram
	invWait                   metric.Float64Histogram
	invRunning, invWaiting    metric.Int64UpDownCounter
}

var _ fxcqrs.Observer = (*Observer)(nil)

// New returns an Observer that uses the given providers.
func New(tp trace.TracerProvider, mp metric.MeterProvider) (*Observer, error) {
	meter := mp.Meter(ScopeName)
	o := &Observer{tracer: tp.Tracer(ScopeName)}
	var errs [7]error
	o.calls, errs[0] = meter.Int64Counter("fxcqrs.calls",
		metric.WithDescription("Send, Exec, Stream and Publish calls, by outcome"), metric.WithUnit("{call}"))
	o.callDuration, errs[1] = meter.Float64Histogram("fxcqrs.call.duration",
		metric.WithDescription("Duration of calls, their events included"), metric.WithUnit("s"))
	o.invocations, errs[2] = meter.Int64Counter("fxcqrs.invocations",
		metric.WithDescription("Event handler invocations, by outcome"), metric.WithUnit("{invocation}"))
	o.invDuration, errs[3] = meter.Float64Histogram("fxcqrs.invocation.duration",
		metric.WithDescription("Duration of event handler invocations"), metric.WithUnit("s"))
	o.invWait, errs[4] = meter.Float64Histogram("fxcqrs.invocation.wait",
		metric.WithDescription("Time invocations waited for a slot"), metric.WithUnit("s"))
	o.invRunning, errs[5] = meter.Int64UpDownCounter("fxcqrs.invocations.running",
		metric.WithDescription("Event handler invocations running"), metric.WithUnit("{invocation}"))
	o.invWaiting, errs[6] = meter.Int64UpDownCounter("fxcqrs.invocations.waiting",
		metric.WithDescription("Event handler invocations waiting for a slot"), metric.WithUnit("{invocation}"))
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

func outcome(err error) attribute.KeyValue {
	if err != nil {
		return OutcomeKey.String("error")
	}
	return OutcomeKey.String("ok")
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
	end(trace.SpanFromContext(ctx), p.Err)
	attrs := metric.WithAttributes(KindKey.String(p.Call.Kind.String()), MessageKey.String(p.Call.MessageType), outcome(p.Err))
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
		trace.SpanFromContext(ctx).AddEvent("fxcqrs: invocation not started", trace.WithAttributes(
			append(attrs, attribute.String("error", errString(p.Err)))...))
		o.invocations.Add(ctx, 1, metric.WithAttributes(append(attrs, OutcomeKey.String("not_started"))...))
		return
	}
	o.invRunning.Add(ctx, -1)
	end(trace.SpanFromContext(ctx), p.Err)
	set := metric.WithAttributes(append(attrs, outcome(p.Err))...)
	o.invocations.Add(ctx, 1, set)
	o.invDuration.Record(ctx, p.Elapsed.Seconds(), set)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
