package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"go.uber.org/zap"
)

// A fallback answers in its primary handler's place when the primary fails
// with an error its predicate accepts, or when the primary's circuit
// breaker is open: a dependency that is down degrades the answer instead of
// failing it. It handles the same message, with the same response type.
//
// What never makes a fallback run: the caller's cancellation, ErrStopped,
// and an *EventError (the events of a call the primary made), which say
// nothing of the primary's own dependency.
//
// The primary's emitted events are discarded when it fails; the
// fallback's are processed as any handler's. The fallback runs under the
// caller's context, not under a deadline the primary exhausted, and on the
// slot the primary held: fallbacks never exceed MaxConcurrentHandlers. When
// the fallback fails too, the error is a [*FallbackError] carrying both.

// FallbackOption configures a fallback.
type FallbackOption func(*fallbackSpec)

// FallbackOn sets which errors of the primary the fallback answers for.
// Default: every error (but the ones that never make a fallback run). An
// open circuit breaker always does.
func FallbackOn(accepts func(err error) bool) FallbackOption {
	return func(s *fallbackSpec) { s.accepts = accepts }
}

// fallbackSpec is a fallback on its way into a registry.
type fallbackSpec struct {
	handler any
	source  string       // the fx constructor, when known
	primary reflect.Type // event fallbacks: the primary handler's type
	accepts func(error) bool
}

// FallbackError is the error of a call or invocation whose primary handler
// and fallback both failed. errors.Is and errors.As see both.
type FallbackError struct {
	// Primary is what made the fallback run: the primary's error, or one
	// matching ErrBreakerOpen.
	Primary error
	// Fallback is the fallback's own error.
	Fallback error
}

// Error names both failures.
func (e *FallbackError) Error() string {
	return "fxcqrs: fallback failed too: " + e.Fallback.Error() + " (primary: " + e.Primary.Error() + ")"
}

// Unwrap returns both errors.
func (e *FallbackError) Unwrap() []error { return []error{e.Primary, e.Fallback} }

// FallbackUsed says that a fallback answered, in CallFinished and
// InvocationFinished; its zero value, that none did.
type FallbackUsed struct {
	// Handler is the fallback's full type name.
	Handler string
	// Cause is why: the primary's error, or one matching ErrBreakerOpen.
	Cause error
}

// fallback is one registered fallback, attached to the handlers it backs.
type fallback struct {
	handler any
	name    string
	accepts func(error) bool
	event   engine.Handler // event fallbacks, for the engine's typed call
	typed   atomic.Value   // request, command and stream fallbacks: see typedFallback
}

// typedFallback returns fb as an H, kept after the first call as
// typedHandler keeps a primary.
func typedFallback[H any](fb *fallback) H {
	if p, ok := fb.typed.Load().(*H); ok {
		return *p
	}
	h := fb.handler.(H) // registration checked the shape
	fb.typed.Store(&h)
	return h
}

// answers reports whether fb, when there is one, answers for the
// primary's err under ctx.
func (fb *fallback) answers(ctx context.Context, err error) bool {
	switch {
	case fb == nil || err == nil || ctx.Err() != nil:
		return false // nothing to answer for, or the caller's cancellation
	case errors.Is(err, ErrBreakerOpen):
		return true
	case !countsAsFailure(err):
		return false
	case fb.accepts == nil:
		return true
	}
	return fb.accepts(err)
}

// takeOver logs that fb answers for handler, which failed with cause, and
// returns what the observer hears of it.
func (fb *fallback) takeOver(m *Mediator, handler string, cause error) FallbackUsed {
	m.log.Warn("fallback answers for its primary",
		zap.String("handler", handler), zap.String("fallback", fb.name), zap.Error(cause))
	return FallbackUsed{Handler: fb.name, Cause: cause}
}

// guarded runs primary and, when it fails in a way fb answers for, runs
// the fallback instead, in the same frame, the primary's events discarded.
// It reports the fallback used, if any. A stream, whose fallback can only
// answer before its first item, uses answers and takeOver itself.
func guarded[Res any](m *Mediator, f *engine.Frame, fb *fallback, handler string,
	primary, fallback func(context.Context) (Res, error),
) (res Res, used FallbackUsed, err error) {
	if fb == nil {
		res, err = primary(f)
		return res, used, err
	}
	mark := f.Mark()
	if res, err = primary(f); !fb.answers(f, err) {
		return res, used, err
	}
	f.Truncate(mark) // the primary failed: its events go with it
	used = fb.takeOver(m, handler, err)
	res, fbErr := fallback(f)
	if fbErr != nil {
		return res, used, &FallbackError{Primary: err, Fallback: fbErr}
	}
	return res, used, nil
}

func newFallbackSpec(h any, source string, primary reflect.Type, opts []FallbackOption) fallbackSpec {
	s := fallbackSpec{handler: h, source: source, primary: primary}
	for _, opt := range opts {
		opt(&s)
	}
	return s
}

// fallbackShape finds the role a fallback of type t can back from its
// Handle method.
func fallbackShape(t reflect.Type, event bool) (handlerSpec, error) {
	if event {
		return inspect(roleEvent, t)
	}
	var errs []error
	for _, r := range []role{roleRequest, roleStream, roleCommand} {
		spec, err := inspect(r, t)
		if err == nil {
			return spec, nil
		}
		errs = append(errs, err)
	}
	return handlerSpec{}, fmt.Errorf("%s has no Handle method of a request, command or stream handler: %w", typeName(t), errs[0])
}

// addFallbacks attaches each fallback to the handlers it backs, and reports
// every problem at once.
func (m *Mediator) addFallbacks(specs []fallbackSpec) error {
	var errs []error
	for _, s := range specs {
		if err := m.addFallback(s); err != nil {
			errs = append(errs, fmt.Errorf("fallback %s%s: %w", typeNameOf(s.handler), from(s.source), err))
		}
	}
	return errors.Join(errs...)
}

func typeNameOf(v any) string { return typeName(reflect.TypeOf(v)) }

func (m *Mediator) addFallback(s fallbackSpec) error {
	if s.handler == nil {
		return errors.New("nil")
	}
	t := reflect.TypeOf(s.handler)
	spec, err := fallbackShape(t, s.primary != nil)
	if err != nil {
		return err
	}
	fb := &fallback{handler: s.handler, name: typeName(t), accepts: s.accepts}
	if s.primary != nil {
		return m.addEventFallback(s, spec, fb)
	}
	e := m.reg.handlers[spec.message]
	switch {
	case e == nil:
		return fmt.Errorf("no handler of %s to back", typeName(spec.message))
	case e.role != spec.role:
		return fmt.Errorf("it handles %s as a %s handler, but its handler %s is a %s handler", typeName(spec.message), spec.role, e.name, e.role)
	case e.result != spec.result:
		return fmt.Errorf("it answers %s with %s, but its handler %s answers with %s", typeName(spec.message), typeName(spec.result), e.name, typeName(e.result))
	case e.fallback != nil:
		return fmt.Errorf("%s already has a fallback, %s", e.name, e.fallback.name)
	}
	e.fallback = fb
	return nil
}

func (m *Mediator) addEventFallback(s fallbackSpec, spec handlerSpec, fb *fallback) error {
	var backed []*eventHandler
	for _, hs := range m.reg.events {
		for _, h := range hs {
			if reflect.TypeOf(h.Value) == s.primary {
				backed = append(backed, h)
			}
		}
	}
	if len(backed) == 0 {
		return fmt.Errorf("no event handler of type %s to back", typeName(s.primary))
	}
	for _, h := range backed {
		if h.event != spec.message {
			return fmt.Errorf("it handles %s, but %s handles %s", typeName(spec.message), h.Name, typeName(h.event))
		}
		if h.fallback != nil {
			return fmt.Errorf("%s already has a fallback, %s", h.Name, h.fallback.name)
		}
	}
	fb.event = engine.Handler{Value: s.handler, Name: fb.name}
	fb.event.Prepare(spec.message)
	for _, h := range backed {
		h.fallback = fb
	}
	return nil
}
