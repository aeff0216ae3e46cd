package fxcqrs

import (
	"context"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// This file is the wrapped path: calls and invocations that middleware
// wraps or an observer watches. Send and Exec come here only when their
// handler has middleware or the mediator an observer; event handlers only
// when the engine was given a Run for them (see eventTable).

// observation is a call that the observer, or middleware such as
// Logging, hears the end of, with what its caller receives.
type observation struct {
	obs      Observer // nil: only enders hear
	enders   []callEnder
	call     Call
	start    time.Time
	fallback FallbackUsed
}

// observe tells the observer a call started; its context becomes the
// parent of everything the call does.
func (m *Mediator) observe(f *engine.Frame, call Call) *observation {
	f.Context = m.obs.CallStarted(f.Context, CallStarted{Call: call})
	return &observation{obs: m.obs, call: call, start: time.Now()}
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

// observeCall starts the observation of a call to e's handler, or returns
// nil when nothing hears its end.
func (m *Mediator) observeCall(f *engine.Frame, e *handlerEntry, call Call) *observation {
	var o *observation
	if m.obs != nil {
		o = m.observe(f, call)
	} else if len(e.enders) > 0 {
		o = &observation{call: call, start: time.Now()}
	}
	if o != nil {
		o.enders = e.enders
	}
	return o
}

func sendWrapped[Req, Res any](m *Mediator, e *handlerEntry, h RequestHandler[Req, Res], f *engine.Frame, req Req) (Res, error) {
	var zero Res
	var (
		call Call
		o    *observation
	)
	if e.chain != nil || m.obs != nil || len(e.enders) > 0 {
		call = Call{Kind: KindRequest, Message: req, MessageType: e.msgName, Handler: e.name}
		o = m.observeCall(f, e, call)
	}
	res, used, err := guarded(m, f, e.guard, e.name,
		func(ctx context.Context) (Res, error) { return sendChain(ctx, e, h, call, req) },
		func(ctx context.Context) (Res, error) {
			return runRequest(ctx, typedFallback[RequestHandler[Req, Res]](e.guard.fallback), req)
		})
	if o != nil {
		o.fallback = used
	}
	if err != nil {
		return zero, m.end(f, err, o)
	}
	return res, m.end(f, nil, o)
}

// sendChain runs a request handler through its middleware, if any.
func sendChain[Req, Res any](ctx context.Context, e *handlerEntry, h RequestHandler[Req, Res], call Call, req Req) (Res, error) {
	if e.chain == nil {
		return runRequest(ctx, h, req)
	}
	out, err := runChain(ctx, e.chain, call, func(ctx context.Context) (any, error) {
		return runRequest(ctx, h, req)
	})
	var res Res
	if err == nil && out != nil {
		var ok bool
		if res, ok = out.(Res); !ok {
			err = fmt.Errorf("fxcqrs.Send: middleware answered %T for %s, whose handler returns %s", out, e.msgName, typeName(e.result))
		}
	}
	return res, err
}

func execWrapped[Cmd any](m *Mediator, e *handlerEntry, h CommandHandler[Cmd], f *engine.Frame, cmd Cmd) error {
	var (
		call Call
		o    *observation
	)
	if e.chain != nil || m.obs != nil || len(e.enders) > 0 {
		call = Call{Kind: KindCommand, Message: cmd, MessageType: e.msgName, Handler: e.name}
		o = m.observeCall(f, e, call)
	}
	_, used, err := guarded(m, f, e.guard, e.name,
		func(ctx context.Context) (struct{}, error) {
			if e.chain == nil {
				return struct{}{}, runCommand(ctx, h, cmd)
			}
			_, err := runChain(ctx, e.chain, call, func(ctx context.Context) (any, error) {
				return nil, runCommand(ctx, h, cmd)
			})
			return struct{}{}, err
		},
		func(ctx context.Context) (struct{}, error) {
			return struct{}{}, runCommand(ctx, typedFallback[CommandHandler[Cmd]](e.guard.fallback), cmd)
		})
	if o != nil {
		o.fallback = used
	}
	return m.end(f, err, o)
}

// runEvent is the engine's Run for an event handler with middleware or
// under an observer. A failed attempt's follow-ups are dropped at once, so
// that a retrying middleware's successful attempt does not carry them.
func (m *Mediator) runEvent(f *engine.Frame, rec engine.Record, h *eventHandler, queuedAt engine.Mono) error {
	call := Call{Kind: KindEvent, Message: rec.Event(), MessageType: h.messageType(rec), Handler: h.Name}
	var start time.Time
	if m.obs != nil {
		var waited time.Duration
		if queuedAt != 0 {
			waited = engine.Now().Sub(queuedAt)
		}
		f.Context = m.obs.InvocationStarted(f.Context, InvocationStarted{Call: call, Waited: waited, Queued: queuedAt != 0})
		start = time.Now()
	}
	_, used, err := guarded(m, f, h.guard, h.Name,
		func(ctx context.Context) (struct{}, error) {
			if h.chain == nil {
				return struct{}{}, runEventHandler(ctx, rec, &h.Handler)
			}
			_, err := runChain(ctx, h.chain, call, func(ctx context.Context) (any, error) {
				mark := f.Mark()
				err := runEventHandler(ctx, rec, &h.Handler)
				if err != nil {
					f.Truncate(mark)
				}
				return nil, err
			})
			return struct{}{}, err
		},
		func(ctx context.Context) (struct{}, error) {
			return struct{}{}, runEventHandler(ctx, rec, &h.guard.fallback.event)
		})
	if m.obs != nil {
		m.obs.InvocationFinished(f.Context, InvocationFinished{
			Call: call, Err: err, Elapsed: time.Since(start), Started: true, Queued: queuedAt != 0, Fallback: used,
		})
	}
	return err
}

func runEventHandler(ctx context.Context, rec engine.Record, h *engine.Handler) (err error) {
	defer recoverInto(&err)
	return rec.Call(ctx, h)
}
