package fxcqrs

import (
	"context"
	"fmt"
	"time"
)

// This file is the slow path of calls and invocations: the one taken when
// middleware wraps them or an observer watches. Without either, calls never
// come here.

// settle processes the events a call's handler emitted, per cfg, without
// ending the call.
func (m *Mediator) settle(f *frame, cfg *EventConfig, d *dispatcher) error {
	buf := f.seal()
	if buf == nil {
		return nil
	}
	err := m.process(f, cfg, d, buf.recs) // recovers handler panics: no defer needed
	buf.release()
	return err
}

// callStarted tells the observer, whose context becomes the parent of
// everything the call does.
func (m *Mediator) callStarted(f *frame, call Call) time.Time {
	if m.obs == nil {
		return time.Time{}
	}
	f.Context = m.obs.CallStarted(f.Context, CallStarted{Call: call})
	return time.Now()
}

func (m *Mediator) callFinished(f *frame, call Call, err error, start time.Time) {
	if m.obs != nil {
		m.obs.CallFinished(f.Context, CallFinished{Call: call, Err: err, Elapsed: time.Since(start)})
	}
}

func sendSlow[Req, Res any](m *Mediator, e *handlerEntry, h RequestHandler[Req, Res], f *frame, req Req) (Res, error) {
	var zero Res
	call := Call{Kind: KindRequest, Message: req, MessageType: e.msgName, Handler: e.name}
	start := m.callStarted(f, call)
	out, err := runChain(f, e.chain, call, func(ctx context.Context) (any, error) {
		return handleRequest(ctx, h, req)
	})
	var res Res
	if err == nil && out != nil {
		var ok bool
		if res, ok = out.(Res); !ok {
			err = fmt.Errorf("fxcqrs.Send: middleware answered %T for %s, whose handler returns %s", out, e.msgName, typeName(e.result))
		}
	}
	if err != nil {
		return zero, m.complete(f, call, start, err)
	}
	return res, m.complete(f, call, start, nil)
}

func execSlow[Cmd any](m *Mediator, e *handlerEntry, h CommandHandler[Cmd], f *frame, cmd Cmd) error {
	call := Call{Kind: KindCommand, Message: cmd, MessageType: e.msgName, Handler: e.name}
	start := m.callStarted(f, call)
	_, err := runChain(f, e.chain, call, func(ctx context.Context) (any, error) {
		return nil, handleCommand(ctx, h, cmd)
	})
	return m.complete(f, call, start, err)
}

// complete ends a Send or Exec on the slow path, as finish and discard do
// on the fast one: events processed when the chain succeeded, discarded
// when it failed; then the observer hears and the call leaves flight.
func (m *Mediator) complete(f *frame, call Call, start time.Time, err error) error {
	if err != nil {
		f.seal().release()
	} else {
		err = m.settle(f, &m.cfg.Events, m.events)
	}
	m.callFinished(f, call, err, start)
	m.end(f)
	return err
}

// callEvent runs an event handler through its middleware and the observer.
// A failed attempt's follow-ups are dropped at once, so that a retrying
// middleware's successful attempt does not carry them.
func (m *Mediator) callEvent(f *frame, rec eventRecord, h *eventHandler, queuedAt monotime) error {
	call := Call{Kind: KindEvent, Message: rec.event(), MessageType: h.msgName, Handler: h.name}
	var start time.Time
	if m.obs != nil {
		var waited time.Duration
		if queuedAt != 0 {
			waited = monoNow().sub(queuedAt)
		}
		f.Context = m.obs.InvocationStarted(f.Context, InvocationStarted{Call: call, Waited: waited, Queued: queuedAt != 0})
		start = time.Now()
	}
	var err error
	if h.chain == nil {
		err = callHandler(f, rec, h)
	} else {
		_, err = runChain(f, h.chain, call, func(ctx context.Context) (any, error) {
			mark := f.mark()
			err := callHandler(ctx, rec, h)
			if err != nil {
				f.truncate(mark)
			}
			return nil, err
		})
	}
	if m.obs != nil {
		m.obs.InvocationFinished(f.Context, InvocationFinished{
			Call: call, Err: err, Elapsed: time.Since(start), Started: true, Queued: queuedAt != 0,
		})
	}
	return err
}

// dropped tells the observer about an invocation that will never run.
func (m *Mediator) dropped(ctx context.Context, rec eventRecord, h *eventHandler, err error, queuedAt monotime) {
	if m.obs == nil {
		return
	}
	m.obs.InvocationFinished(ctx, InvocationFinished{
		Call: Call{Kind: KindEvent, Message: rec.event(), MessageType: h.msgName, Handler: h.name},
		Err:  err, Queued: queuedAt != 0,
	})
}

// monotime is a monotonic instant in 8 bytes, for queue nodes: nanoseconds
// since the process's epoch, plus one so that zero means "not set".
type monotime int64

var epoch = time.Now()

func monoNow() monotime { return monotime(time.Since(epoch)) + 1 }

func (t monotime) sub(u monotime) time.Duration { return time.Duration(t - u) }
