package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"github.com/fxcqrs/fxcqrs/internal/typekey"
)

// Send sends req to its request handler and returns the handler's
// response, after every event the handler emitted (follow-ups included)
// has been processed per Config.Events.
//
// Res must be given; Req is inferred:
//
//	receipt, err := fxcqrs.Send[Receipt](ctx, m, PlaceOrder{ID: 7})
//
// Errors: ErrNoHandler when no request handler is registered for Req's
// exact type; an error naming the handler's response type when it is not
// Res; the handler's own error unchanged (its events are discarded); a
// *PanicError when it panicked; and, beside a valid response, an
// *EventError when event handlers failed.
func Send[Res, Req any](ctx context.Context, m *Mediator, req Req) (Res, error) {
	var zero Res
	e, f, err := lookup[Req](ctx, m, roleRequest, "Send")
	if err != nil {
		return zero, err
	}
	h, ok := typedHandler[RequestHandler[Req, Res]](e)
	if !ok {
		m.eng.Leave(f)
		return zero, e.wrongResult("Send", reflect.TypeFor[Res]())
	}
	if e.nilable && isNil(req) {
		m.eng.Leave(f)
		return zero, errNilRequest("Send", e.message)
	}
	if e.chain != nil || m.obs != nil || e.guard != nil {
		return sendWrapped(m, e, h, f, req)
	}
	res, err := runRequest(f, h, req)
	if err != nil {
		return zero, m.end(f, err, nil)
	}
	return res, m.end(f, nil, nil)
}

// Exec sends cmd to its command handler and returns after every event the
// handler emitted (follow-ups included) has been processed per
// Config.Events. Its errors are those of [Send].
func Exec[Cmd any](ctx context.Context, m *Mediator, cmd Cmd) error {
	e, f, err := lookup[Cmd](ctx, m, roleCommand, "Exec")
	if err != nil {
		return err
	}
	h, ok := typedHandler[CommandHandler[Cmd]](e)
	if !ok {
		m.eng.Leave(f)
		return errHandlerMismatch(e.handler, e.message)
	}
	if e.nilable && isNil(cmd) {
		m.eng.Leave(f)
		return errNilRequest("Exec", e.message)
	}
	if e.chain != nil || m.obs != nil || e.guard != nil {
		return execWrapped(m, e, h, f, cmd)
	}
	return m.end(f, runCommand(f, h, cmd), nil)
}

// runRequest and runCommand run a request or command handler, its panic
// recovered: twins, one per handler shape.
func runRequest[Req, Res any](ctx context.Context, h RequestHandler[Req, Res], req Req) (res Res, err error) {
	defer recoverInto(&err)
	return h.Handle(ctx, req)
}

func runCommand[Cmd any](ctx context.Context, h CommandHandler[Cmd], cmd Cmd) (err error) {
	defer recoverInto(&err)
	return h.Handle(ctx, cmd)
}

// recoverInto turns a panic into a *PanicError in *err. It must be
// deferred directly.
func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = newPanicError(r)
	}
}

// Publish processes event as if a handler had emitted it: every handler of
// E runs per Config.Events, follow-ups included, and Publish returns when
// they are done, with an *EventError naming each failure. It is how events
// from outside the process (a message broker's consumer) enter. An event
// type without handlers is not an error.
func Publish[E any](ctx context.Context, m *Mediator, event E) error {
	if err := checkCall(ctx, m, "Publish"); err != nil {
		return err
	}
	// The frame only carries the context, depth and slot of the call: no
	// handler receives it, so it stays on the stack.
	var f engine.Frame
	if a := m.eng.Enter(ctx, &f); a != engine.Admitted {
		return refusal("Publish", a)
	}
	rec, ok := engine.RecordOf(&event)
	if !ok {
		m.eng.Leave(&f)
		return fmt.Errorf("fxcqrs.Publish: nil %s event: an event of an interface type must hold a value", typeName(reflect.TypeFor[E]()))
	}
	var o *observation
	if m.obs != nil {
		o = m.observe(&f, Call{Kind: KindPublish, Message: event, MessageType: typeName(rec.Type())})
	}
	events := [1]engine.Record{rec}
	err := eventError(m.eng.Process(&f, engine.Events, events[:]))
	o.finish(&f, err)
	m.eng.Leave(&f)
	return err
}

// lookup admits a call and finds the handler of T. The frame it returns
// is the one allocation of a call that emits nothing.
func lookup[T any](ctx context.Context, m *Mediator, r role, api string) (*handlerEntry, *engine.Frame, error) {
	if err := checkCall(ctx, m, api); err != nil {
		return nil, nil, err
	}
	f := new(engine.Frame)
	if a := m.eng.Enter(ctx, f); a != engine.Admitted {
		return nil, nil, refusal(api, a)
	}
	e, _ := m.reg.handlerTable.Get(typekey.Of[T]())
	if e == nil || e.role != r {
		m.eng.Leave(f)
		return nil, nil, m.noHandler(reflect.TypeFor[T](), api)
	}
	return e, f, nil
}

// end ends a Send or Exec whose handler returned err: the events it
// emitted are processed per Config.Events when err is nil and discarded
// otherwise; the observer, if any, hears; the call leaves flight. It
// returns what the caller receives.
func (m *Mediator) end(f *engine.Frame, err error, o *observation) error {
	if o != nil {
		return m.endEvents(f, f.Seal(), err, o)
	}
	if buf := m.eng.End(f); buf != nil {
		return m.endEvents(f, buf, err, nil)
	}
	return err // the common case: End has left
}

// endEvents is end for a call that emitted events or is observed.
func (m *Mediator) endEvents(f *engine.Frame, buf *engine.Buffer, err error, o *observation) error {
	if err != nil {
		buf.Release()
	} else if buf != nil {
		err = m.process(f, engine.Events, buf)
	}
	o.finish(f, err)
	m.eng.Leave(f)
	return err
}

func checkCall(ctx context.Context, m *Mediator, api string) error {
	if m == nil {
		return errors.New("fxcqrs." + api + ": nil *Mediator")
	}
	if ctx == nil {
		return errors.New("fxcqrs." + api + ": nil context")
	}
	return nil
}

func refusal(api string, a engine.Admission) error {
	switch a {
	case engine.RefusedNotReady:
		return fmt.Errorf("fxcqrs.%s: %w", api, ErrNotReady)
	case engine.RefusedTooDeep:
		return fmt.Errorf("fxcqrs.%s: %w (%d)", api, ErrMaxDepth, MaxDepth)
	}
	return fmt.Errorf("fxcqrs.%s: %w", api, ErrStopped)
}

func (m *Mediator) noHandler(typ reflect.Type, api string) error {
	if hs := m.reg.events[typ]; len(hs) > 0 && m.reg.handlers[typ] == nil {
		return fmt.Errorf("fxcqrs.%s: %w for %s: it has event handlers only (%s); call Publish", api, ErrNoHandler, typeName(typ), hs[0].Name)
	}
	if e := m.reg.handlers[typ]; e != nil {
		use := map[role]string{roleRequest: "Send", roleCommand: "Exec", roleStream: "Stream"}[e.role]
		return fmt.Errorf("fxcqrs.%s: %w for %s: it has a %s handler (%s); call %s", api, ErrNoHandler, typeName(typ), e.role, e.name, use)
	}
	// The commonest slip: a pointer sent for a value type, or the reverse.
	var alt reflect.Type
	if typ.Kind() == reflect.Pointer {
		alt = typ.Elem()
	} else {
		alt = reflect.PointerTo(typ)
	}
	if other := m.reg.handlers[alt]; other != nil {
		return fmt.Errorf("fxcqrs.%s: %w for %s (%s has one: types match exactly)", api, ErrNoHandler, typeName(typ), typeName(alt))
	}
	return fmt.Errorf("fxcqrs.%s: %w for %s", api, ErrNoHandler, typeName(typ))
}

// typedHandler returns e's handler as an H. Asserting to a generic
// interface looks its itab up on every call, so the first successful
// assertion is kept on the entry; a call asking for another H (a wrong
// response type) misses the cache and fails the assertion.
func typedHandler[H any](e *handlerEntry) (H, bool) {
	if p, ok := e.typed.Load().(*H); ok {
		return *p, true
	}
	h, ok := e.handler.(H)
	if ok {
		e.typed.Store(&h)
	}
	return h, ok
}

func (e *handlerEntry) wrongResult(api string, asked reflect.Type) error {
	return fmt.Errorf("fxcqrs.%s: the handler of %s (%s) returns %s, not %s", api, typeName(e.message), e.name, typeName(e.result), typeName(asked))
}

func errNilRequest(api string, typ reflect.Type) error {
	return fmt.Errorf("fxcqrs.%s: nil %s request", api, typeName(typ))
}

func errHandlerMismatch(handler any, msg reflect.Type) error {
	return fmt.Errorf("fxcqrs: internal error: %T does not handle %s", handler, typeName(msg))
}

// isNil reports whether a request of a pointer or interface type is nil.
// Only called for such types (handlerEntry.nilable), so boxing does not
// allocate.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
