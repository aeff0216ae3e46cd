package fxcqrs

import (
	"errors"

	"github.com/fxcqrs/fxcqrs/internal/engine"
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

// beside joins the errors a call returns beside a valid response (an
// *EventError and what a Forwarder reported): nil when both are, the one
// error itself when one is.
func beside(err, other error) error {
	switch {
	case other == nil:
		return err
	case err == nil:
		return other
	}
	return errors.Join(err, other)
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
