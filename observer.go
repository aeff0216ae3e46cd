package fxcqrs

import (
	"context"
	"time"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// Observer sees what the mediator does: calls, and event handler
// invocations queued, started and finished. It is how tracing and metrics
// attach (the module github.com/fxcqrs/fxcqrs/fxcqrsotel adapts OpenTelemetry)
// without the core depending on them. A mediator without an observer pays
// nothing for the feature.
//
// The contexts the Started methods return are what the call's handler, or
// the invocation's handler, runs with: a span started there is the parent
// of everything the handler does, the call's event invocations included.
// The methods run on the goroutine of what they observe and must be quick
// and safe for concurrent use. Embed [NopObserver] to implement only some
// methods and stay compatible when methods are added.
type Observer interface {
	// CallStarted sees a call admitted; the context it returns is the
	// call's from then on.
	CallStarted(ctx context.Context, p CallStarted) context.Context
	// CallFinished sees a call end, with what its caller received.
	CallFinished(ctx context.Context, p CallFinished)
	// InvocationQueued sees an event handler invocation start waiting for
	// a slot.
	InvocationQueued(ctx context.Context, p InvocationQueued)
	// InvocationStarted sees an invocation's handler about to run; the
	// context it returns is the handler's.
	InvocationStarted(ctx context.Context, p InvocationStarted) context.Context
	// InvocationFinished sees an invocation end, or dropped unstarted.
	InvocationFinished(ctx context.Context, p InvocationFinished)
	// BreakerStateChanged sees a handler's circuit breaker change state
	// (see [Breaker]). ctx carries no call: a state outlives calls.
	BreakerStateChanged(ctx context.Context, p BreakerStateChanged)
}

// BreakerStateChanged is a handler's circuit breaker changing state.
type BreakerStateChanged struct {
	// Handler is the handler's full type name.
	Handler string
	// MessageType is the message type it handles.
	MessageType string
	// From is the state it left.
	From BreakerState
	// To is the state it entered.
	To BreakerState
}

// CallStarted is a Send, Exec, Stream or Publish that was admitted.
type CallStarted struct {
	// Call is what is called.
	Call Call
}

// CallFinished is the end of a call: for Send and Exec when they return,
// for Stream when its iteration ends. Err is what the call returned (for a
// stream, the last error it delivered).
type CallFinished struct {
	// Call is what was called.
	Call Call
	// Err is what the caller received: nil, the handler's error, or an
	// *EventError beside a valid response.
	Err error
	// Elapsed is the call's duration, its events included.
	Elapsed time.Duration
	// Fallback says whether the handler's fallback answered, and why.
	Fallback FallbackUsed
}

// InvocationQueued is an invocation that waits for a slot. Invocations
// that find a free slot at once, and those of sequential mode, are not
// queued.
type InvocationQueued struct {
	// Call is the invocation: KindEvent, the event and its handler.
	Call Call
}

// InvocationStarted is an invocation whose handler starts, Waited after it
// was queued.
type InvocationStarted struct {
	// Call is the invocation: KindEvent, the event and its handler.
	Call Call
	// Waited is how long it waited for a slot; zero when not queued.
	Waited time.Duration
	// Queued reports whether the invocation waited in the queue (and
	// InvocationQueued was called for it).
	Queued bool
}

// InvocationFinished is an invocation that ended, or that was dropped
// without running (Started false: its call's context ended, or the
// mediator stopped).
type InvocationFinished struct {
	// Call is the invocation: KindEvent, the event and its handler.
	Call Call
	// Err is the handler's error, a *PanicError, or for an invocation
	// that never ran an error matching ErrNotStarted and its cause.
	Err error
	// Elapsed is how long the handler ran, retries included.
	Elapsed time.Duration
	// Started reports whether the handler ran.
	Started bool
	// Fallback says whether the handler's fallback answered, and why.
	Fallback FallbackUsed
	// Queued reports whether the invocation waited in the queue.
	Queued bool
}

// NopObserver implements Observer and does nothing. Embed it.
type NopObserver struct{}

// CallStarted returns ctx.
func (NopObserver) CallStarted(ctx context.Context, _ CallStarted) context.Context { return ctx }

// CallFinished does nothing.
func (NopObserver) CallFinished(context.Context, CallFinished) {}

// InvocationQueued does nothing.
func (NopObserver) InvocationQueued(context.Context, InvocationQueued) {}

// InvocationStarted returns ctx.
func (NopObserver) InvocationStarted(ctx context.Context, _ InvocationStarted) context.Context {
	return ctx
}

// InvocationFinished does nothing.
func (NopObserver) InvocationFinished(context.Context, InvocationFinished) {}

// BreakerStateChanged does nothing.
func (NopObserver) BreakerStateChanged(context.Context, BreakerStateChanged) {}

// observation is a call that the observer, or middleware such as
// Logging, hears the end of, with what its caller receives.
type observation struct {
	obs      Observer // nil: only enders hear
	enders   []callEnder
	call     Call
	start    time.Time
	fallback FallbackUsed
}

// finish tells the observer and the enders the call ended with err. A nil
// observation does nothing.
func (o *observation) finish(f *engine.Frame, err error) {
	if o == nil {
		return
	}
	elapsed := time.Since(o.start)
	if o.obs != nil {
		o.obs.CallFinished(f.Context, CallFinished{Call: o.call, Err: err, Elapsed: elapsed, Fallback: o.fallback})
	}
	for _, c := range o.enders {
		c.callEnded(f.Context, o.call, err, elapsed)
	}
}
