package engine

import (
	"context"
	"errors"
	"reflect"
	"runtime/debug"
	"time"
)

// Failure is one invocation that failed or never ran. Its Err is the
// handler's error, a *Panic, or a *NotStarted; the root turns it into the
// public EventFailure.
//
// A failure with Forwarding set is not an invocation's: the handler
// succeeded, but handing its follow-up events to the Forward hook failed
// with Err. Event and Type are unset.
type Failure struct {
	Event      any          // boxed: the failure outlives the event's buffer
	Type       reflect.Type // the event's type
	Handler    *Handler     // whose invocation failed
	Err        error        // the handler's error, a *Panic, or a *NotStarted
	Started    bool         // whether the handler ran
	Forwarding bool         // Err is the Forward hook's, for Handler's follow-ups
}

func failure(rec Record, h *Handler, err error, started bool) Failure {
	return Failure{Event: rec.Event(), Type: rec.Type(), Handler: h, Err: err, Started: started}
}

// Panic is a handler's panic, recovered on the engine's direct path.
type Panic struct {
	Value any    // what the handler passed to panic
	Stack []byte // the panicking goroutine's stack
}

// Error is never shown to users: the root turns a Panic into a PanicError.
func (p *Panic) Error() string { return "handler panicked" }

// NewPanic captures a recovered value with the current stack.
func NewPanic(v any) *Panic { return &Panic{Value: v, Stack: debug.Stack()} }

// NotStarted is the Err of an invocation that never ran.
type NotStarted struct {
	Cause error // the call's context error, Abort's cause, or ErrTooDeep
}

// Error says the invocation never ran, and why.
func (e *NotStarted) Error() string { return "not started: " + e.Cause.Error() }

// Unwrap returns the cause.
func (e *NotStarted) Unwrap() error { return e.Cause }

// ErrTooDeep is the cause of invocations past MaxDepth.
var ErrTooDeep = errors.New("too deep")

// MaxDepth bounds how deep handlers nest: a call counts one, each
// generation of follow-up events one, each call made from a handler one.
const MaxDepth = 32

// invoke runs handler h with rec in frame f, unless the call's context is
// already done or Stop's deadline has passed, and returns the follow-up
// events it emitted. A failed handler's follow-ups are discarded with it.
// started reports whether the handler ran. cancellable says whether the
// call's context can end at all (its Done is not nil): most contexts
// cannot, and asking them costs an interface call per invocation. guarded
// says the caller recovers a panic of h on the direct path itself (see
// inlineRun.runFrom), which then unwinds through invoke.
func (e *Engine) invoke(f *Frame, rec *Record, h *Handler, queuedAt Mono, cancellable, guarded bool) (follow *Buffer, started bool, err error) {
	var cause error
	if cancellable {
		cause = f.Err()
	}
	if cause == nil {
		cause = e.abortCause()
	}
	if cause != nil {
		f.Seal().Release()
		err = &NotStarted{Cause: cause}
		e.dropped(f.Context, *rec, h, err, queuedAt)
		return nil, false, err
	}
	switch {
	case h.Run != nil:
		err = h.Run(f, *rec, h, queuedAt)
	case guarded:
		if c := h.direct.Load(); c != nil {
			err = (*c)(f, rec.value) // Call, inlined by hand: it is too big
		} else {
			err = rec.Call(f, h)
		}
	default:
		err = run(f, rec, h)
	}
	follow = f.Seal()
	if err != nil {
		follow.Release()
		return nil, true, err
	}
	return follow, true, nil
}

// forward hands the follow-ups of h's successful invocation in frame f to
// the Forward hook before they are processed in-process, and adds its
// failure to fails. Callers check e.cfg.Forward and follow first, so that
// the hot path pays a nil check, not a call.
func (e *Engine) forward(f *Frame, h *Handler, follow *Buffer, fails []Failure) []Failure {
	if follow.forwarded {
		return fails // middleware took them out itself
	}
	if err := e.cfg.Forward(f.Context, follow.recs); err != nil {
		fails = append(fails, Failure{Handler: h, Err: err, Started: true, Forwarding: true})
	}
	return fails
}

// run calls h directly, recovering its panic: the direct path (no
// middleware, no observer) of every mode but inline, whose levels recover
// once for all their invocations (inlineRun.runFrom).
func run(ctx context.Context, rec *Record, h *Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = NewPanic(r)
		}
	}()
	return rec.Call(ctx, h)
}

// dropped tells the reporter about an invocation that will never run.
func (e *Engine) dropped(ctx context.Context, rec Record, h *Handler, err error, queuedAt Mono) {
	if e.cfg.Reporter != nil {
		e.cfg.Reporter.NotStarted(ctx, rec, h, err, queuedAt != 0)
	}
}

// tooDeep reports every invocation of events as not started: their chain
// is deeper than MaxDepth.
func (e *Engine) tooDeep(ctx context.Context, events []Record, fails []Failure) []Failure {
	for i := range events {
		ev := events[i]
		for _, h := range e.handlers(&ev) {
			err := &NotStarted{Cause: ErrTooDeep}
			fails = append(fails, failure(ev, h, err, false))
			e.dropped(ctx, ev, h, err, 0)
		}
	}
	return fails
}

// Mono is a monotonic instant in 8 bytes, for queue nodes: nanoseconds
// since the process's epoch, plus one so that zero means "not set".
type Mono int64

var epoch = time.Now()

// Now returns the current instant.
func Now() Mono { return Mono(time.Since(epoch)) + 1 }

// Sub returns t-u.
func (t Mono) Sub(u Mono) time.Duration { return time.Duration(t - u) }
