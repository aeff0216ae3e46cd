package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fxcqrs/fxcqrs/fxcqrsotel"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel/otelbus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
)

// packagePath is what print leaves out of type names: their package's
// path up to its name (github.com/fxcqrs/fxcqrs/examples/outbox.PlaceOrder
// is outbox.PlaceOrder).
var packagePath = regexp.MustCompile(`[\w.-]+(/[\w.-]+)*/`)

// tracing is the -otel flag's: one SDK for both services, recording the
// spans in memory.
type tracing struct {
	tp    *sdktrace.TracerProvider
	spans *tracetest.SpanRecorder
}

func newTracing() *tracing {
	spans := tracetest.NewSpanRecorder()
	return &tracing{tp: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)), spans: spans}
}

// options are what a service needs to be traced: the otel module's
// observer of the mediator, and otelbus for its messages.
func (t *tracing) options() fx.Option {
	if t == nil {
		return fx.Options()
	}
	return fx.Options(
		fxcqrsotel.Module, otelbus.Module,
		fx.Supply(fx.Annotate(t.tp, fx.As(new(trace.TracerProvider)))),
	)
}

// print waits for the delivery's span to end (the handler signalled
// before its span ended), then prints the trace of the command as a tree,
// children by start time, and the relay's send, which is a trace of its
// own linked to the message.
func (t *tracing) print(ctx context.Context, w io.Writer) error {
	var ended []sdktrace.ReadOnlySpan
	var command sdktrace.ReadOnlySpan
	for {
		ended = t.spans.Ended()
		command = nil
		for _, s := range ended {
			if strings.HasPrefix(s.Name(), "command ") {
				command = s
			}
		}
		if command != nil && slices.ContainsFunc(ended, func(s sdktrace.ReadOnlySpan) bool {
			return strings.HasPrefix(s.Name(), "process ") && s.SpanContext().TraceID() == command.SpanContext().TraceID()
		}) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the delivery's span never ended: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		if s.SpanContext().TraceID() == command.SpanContext().TraceID() && s != command {
			children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
		}
	}
	fmt.Fprintln(w, "trace of PlaceOrder 42, one across both services:")
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		fmt.Fprintf(w, "%s%s (%s)\n", strings.Repeat("  ", depth+1), packagePath.ReplaceAllString(s.Name(), ""), s.SpanKind())
		kids := children[s.SpanContext().SpanID()]
		slices.SortFunc(kids, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	walk(command, 0)
	for _, s := range ended {
		if strings.HasPrefix(s.Name(), "send ") {
			for _, l := range s.Links() {
				if l.SpanContext.TraceID() == command.SpanContext().TraceID() {
					fmt.Fprintf(w, "  the relay's %s (%s): a trace of its own, linked to the message\n", s.Name(), s.SpanKind())
				}
			}
		}
	}
	return t.tp.Shutdown(context.Background())
}
