package fxcqrs

import (
	"context"
	"errors"
	"reflect"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"go.uber.org/zap"
)

// eventError turns the engine's failures into the public *EventError; nil
// when there are none. It is the one place where they become public.
//
// Failures to forward follow-ups (see Forwarder) are not the handlers':
// their errors are returned beside the *EventError, joined.
func eventError(fails []engine.Failure) error {
	if len(fails) == 0 {
		return nil
	}
	out := make([]EventFailure, 0, len(fails))
	var forwarding []error
	for _, f := range fails {
		if f.Forwarding {
			forwarding = append(forwarding, f.Err)
			continue
		}
		out = append(out, EventFailure{
			Event:     f.Event,
			EventType: typeName(f.Type),
			Handler:   f.Handler.Name,
			Err:       publicError(f.Err),
			Started:   f.Started,
		})
	}
	var err error
	if len(out) > 0 {
		err = &EventError{Failures: out}
	}
	for _, fwd := range forwarding {
		err = beside(err, fwd)
	}
	return err
}

// publicError turns the engine's own errors into the public ones.
func publicError(err error) error {
	switch e := err.(type) { //nolint:errorlint // the engine returns its own errors unwrapped
	case *engine.Panic:
		return &PanicError{Value: e.Value, Stack: e.Stack}
	case *engine.NotStarted:
		cause := e.Cause
		if errors.Is(cause, engine.ErrTooDeep) {
			cause = ErrMaxDepth
		}
		return &notStartedError{cause: cause}
	}
	return err
}

// backgroundFailed receives the failures of a background batch. The
// BackgroundErrorHandler hears the event handlers' failures; a Forwarder's
// failures are logged with them.
func (m *Mediator) backgroundFailed(ctx context.Context, fails []engine.Failure) {
	err := eventError(fails)
	m.log.Error("background event handlers failed", zap.Error(err))
	var evErr *EventError
	if m.onBackgroundError != nil && errors.As(err, &evErr) {
		m.onBackgroundError(ctx, evErr)
	}
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

// unhandled is called once for each event type that has no event handler:
// when the type has a handler of another role (an event handler registered
// with AsCommandHandler has the same Handle shape), the events it was meant
// for would vanish without a word, so it warns.
func (m *Mediator) unhandled(t reflect.Type) {
	e := m.reg.handlers[t]
	if e == nil {
		return
	}
	m.log.Warn("event has no event handler, but its type has a "+e.role.String()+" handler; was it meant to be registered as an event handler?",
		zap.String("event", typeName(t)),
		zap.String("handler", e.name),
		zap.String("registeredAs", e.role.registeredAs()),
		zap.String("constructor", e.source),
	)
}
