package fxcqrs

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

var (
	// ErrNoHandler is returned (wrapped with the message type's name) by
	// Send, Exec and Stream when no handler of that kind is registered for
	// the request's exact type.
	ErrNoHandler = errors.New("no handler")

	// ErrStopped is returned by calls that arrive while the mediator is
	// stopping or after it stopped. Calls made from inside a call that is
	// still in flight are not refused: they belong to it.
	ErrStopped = errors.New("mediator stopped")

	// ErrNotReady is returned by calls that arrive before the mediator has
	// its handlers: under fx, before the fxcqrs module's invoke ran (an
	// fx.Invoke in a module given to fx.New before fxcqrs.Module).
	ErrNotReady = errors.New("mediator not ready: handlers are not registered yet")

	// ErrNotStarted marks, inside an [EventError], an event handler
	// invocation that never ran: its context was cancelled first, the
	// mediator stopped, or the event chain was too deep. errors.Is on the
	// failure's Err also matches the cause (context.Canceled, ErrStopped,
	// ErrMaxDepth).
	ErrNotStarted = errors.New("event handler not started")

	// ErrMaxDepth is the cause of calls and events refused because the
	// chain of handlers that led to them is deeper than [MaxDepth].
	ErrMaxDepth = errors.New("handler chain deeper than fxcqrs.MaxDepth")
)

// MaxDepth bounds how deep handlers may nest: a call counts one, each
// generation of follow-up events one, and each call made from inside a
// handler one more. It stops a runaway chain (an event handler that emits
// the event it handles, directly or through others) with [ErrMaxDepth]
// instead of looping forever. It is 32; the engine, which enforces it,
// owns the number.
const MaxDepth = engine.MaxDepth

// EventError is returned beside a valid response when event handler
// invocations failed or never ran. The request itself succeeded: a caller
// tells "request failed" from "request done, events failed" with errors.As.
//
//	res, err := fxcqrs.Send[Receipt](ctx, m, req)
//	var evErr *fxcqrs.EventError
//	if errors.As(err, &evErr) {
//		// res is valid; evErr.Failures says what went wrong
//	}
type EventError struct {
	// Failures lists each failed or unstarted invocation, in the order
	// they finished.
	Failures []EventFailure
}

// EventFailure is one event handler invocation that failed or never ran.
type EventFailure struct {
	// Event is the event value.
	Event any
	// EventType is the event's full type name, package path included.
	EventType string
	// Handler is the handler's full type name, package path included.
	Handler string
	// Err is what the handler returned, a *PanicError, or, for an
	// invocation that never ran, an error matching ErrNotStarted and its
	// cause.
	Err error
	// Started reports whether the handler ran. It is the reliable test:
	// a handler that ran may itself return an error that wraps
	// ErrNotStarted, from a call it made.
	Started bool
}

// Error lists every failure on one line.
func (e *EventError) Error() string {
	var b strings.Builder
	b.WriteString("fxcqrs: ")
	b.WriteString(strconv.Itoa(len(e.Failures)))
	if len(e.Failures) == 1 {
		b.WriteString(" event handler failed: ")
	} else {
		b.WriteString(" event handlers failed: ")
	}
	for i, f := range e.Failures {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.EventType)
		b.WriteString(" -> ")
		b.WriteString(f.Handler)
		b.WriteString(": ")
		if f.Err != nil {
			b.WriteString(f.Err.Error())
		}
	}
	return b.String()
}

// Unwrap returns the error of each failure, so errors.Is and errors.As see
// through an EventError.
func (e *EventError) Unwrap() []error {
	errs := make([]error, 0, len(e.Failures))
	for _, f := range e.Failures {
		errs = append(errs, f.Err)
	}
	return errs
}

// PanicError is a handler's recovered panic. No panic of a handler crashes
// the process, whichever goroutine it ran on.
type PanicError struct {
	// Value is what the handler passed to panic.
	Value any
	// Stack is the panicking goroutine's stack trace.
	Stack []byte
}

func newPanicError(v any) *PanicError {
	return &PanicError{Value: v, Stack: debug.Stack()}
}

// recoverInto turns a panic into a *PanicError in *err. It must be
// deferred directly.
func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = newPanicError(r)
	}
}

// Error reports the panic value; %+v adds the stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("fxcqrs: handler panicked: %v", e.Value)
}

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Format implements fmt.Formatter: %+v prints the stack trace after the
// message.
func (e *PanicError) Format(s fmt.State, verb rune) {
	switch {
	case verb == 'v' && s.Flag('+'):
		_, _ = io.WriteString(s, e.Error())
		_, _ = io.WriteString(s, "\n")
		_, _ = s.Write(e.Stack)
	case verb == 'q':
		_, _ = fmt.Fprintf(s, "%q", e.Error())
	default:
		_, _ = io.WriteString(s, e.Error())
	}
}

// notStartedError is the Err of an invocation that never ran.
type notStartedError struct{ cause error }

func (e *notStartedError) Error() string {
	return "not started: " + e.cause.Error()
}

func (e *notStartedError) Is(target error) bool { return target == ErrNotStarted }

func (e *notStartedError) Unwrap() error { return e.cause }
