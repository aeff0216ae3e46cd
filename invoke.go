package fxcqrs

import (
	"context"
	"time"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// This file is an event handler invocation that middleware wraps, an
// observer watches or a fallback backs; the engine calls the others
// directly.

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
