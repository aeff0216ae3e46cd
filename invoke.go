package fxcqrs

import (
	"context"
	"reflect"
	"time"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// This file is an event handler invocation that middleware wraps, an
// observer watches or a fallback backs; the engine calls the others
// directly.

// eventTable gives the engine every event type's handlers, in order: the
// concrete types' and, apart, the interface types'. A handler with
// middleware, or under an observer, runs through runEvent.
func (m *Mediator) eventTable() (map[reflect.Type][]*engine.Handler, []engine.Interface) {
	concrete := make(map[reflect.Type][]*engine.Handler, len(m.reg.events))
	var ifaces []engine.Interface
	for t, hs := range m.reg.events {
		ehs := make([]*engine.Handler, len(hs))
		for i, h := range hs {
			if h.chain != nil || m.obs != nil || h.fallback != nil {
				h.Run = func(f *engine.Frame, rec engine.Record, _ *engine.Handler, queuedAt engine.Mono) error {
					return m.runEvent(f, rec, h, queuedAt)
				}
			}
			ehs[i] = &h.Handler
		}
		if t.Kind() == reflect.Interface {
			ifaces = append(ifaces, engine.Interface{Type: t, Handlers: ehs})
		} else {
			concrete[t] = ehs
		}
	}
	return concrete, ifaces
}

// runEvent is the engine's Run for an event handler with middleware, under
// an observer, or with a fallback. A failed attempt's follow-ups are dropped at once, so
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
	_, used, err := guarded(m, f, h.fallback, h.Name,
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
			return struct{}{}, runEventHandler(ctx, rec, &h.fallback.event)
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

// reporter tells the observer what the engine queues and never starts.
type reporter struct{ m *Mediator }

func (r reporter) Queued(ctx context.Context, rec engine.Record, h *engine.Handler) {
	r.m.obs.InvocationQueued(ctx, InvocationQueued{Call: eventCall(rec, h)})
}

func (r reporter) NotStarted(ctx context.Context, rec engine.Record, h *engine.Handler, err error, queued bool) {
	r.m.obs.InvocationFinished(ctx, InvocationFinished{Call: eventCall(rec, h), Err: publicError(err), Queued: queued})
}

func eventCall(rec engine.Record, h *engine.Handler) Call {
	return Call{Kind: KindEvent, Message: rec.Event(), MessageType: h.Root.(*eventHandler).messageType(rec), Handler: h.Name}
}
