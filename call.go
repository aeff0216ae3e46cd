package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"github.com/fxcqrs/fxcqrs/internal/typekey"
)

// This file is a call's path, top-down: Send, Exec and Publish; open,
// which every call to a handler (Stream's too) goes through first; then
// the wrapped path, for a handler that middleware wraps, an observer
// watches or a fallback backs. How a call ends, its events processed, is
// in process.go.

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
	e, h, f, err := open[Req, RequestHandler[Req, Res]](ctx, m, roleRequest, "Send", &req)
	if err != nil {
		return zero, err
	}
	if !e.direct {
		return callWrapped[RequestHandler[Req, Res], Req, Res, requestRunner[Req, Res]](m, e, f, h, req)
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
	e, h, f, err := open[Cmd, CommandHandler[Cmd]](ctx, m, roleCommand, "Exec", &cmd)
	if err != nil {
		return err
	}
	if !e.direct {
		_, err = callWrapped[CommandHandler[Cmd], Cmd, struct{}, commandRunner[Cmd]](m, e, f, h, cmd)
		return err
	}
	_, err = runCommand(f, h, cmd)
	return m.end(f, err, nil)
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

// open admits a call to the handler of T in role r and returns it as an H
// with the call's frame, the one allocation of a call that emits nothing.
// On error nothing is left to undo.
func open[T, H any](ctx context.Context, m *Mediator, r role, api string, msg *T) (*handlerEntry, H, *engine.Frame, error) {
	var h H
	if err := checkCall(ctx, m, api); err != nil {
		return nil, h, nil, err
	}
	f := new(engine.Frame)
	if a := m.eng.Enter(ctx, f); a != engine.Admitted {
		return nil, h, nil, refusal(api, a)
	}
	e, _ := m.reg.handlerTable.Get(typekey.Of[T]())
	if e == nil || e.role != r {
		m.eng.Leave(f)
		return nil, h, nil, m.noHandler(reflect.TypeFor[T](), api)
	}
	h, ok := typedHandler[H](e)
	switch {
	case !ok:
		err := e.mismatch(api, reflect.TypeFor[H]())
		m.eng.Leave(f)
		return nil, h, nil, err
	case e.nilable != notNilable && typekey.IsNil(msg, e.nilable == nilablePointer):
		m.eng.Leave(f)
		return nil, h, nil, fmt.Errorf("fxcqrs.%s: nil %s request", api, e.msgName)
	}
	return e, h, f, nil
}

// noHandler is the error of a call whose type has no handler in the role
// asked for; it says what the type has instead, when it has something.
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

// runRequest and runCommand run a request or command handler, its panic
// recovered: one per handler shape, both answering a response so that the
// wrapped path serves both.
func runRequest[Req, Res any](ctx context.Context, h RequestHandler[Req, Res], req Req) (res Res, err error) {
	defer recoverInto(&err)
	return h.Handle(ctx, req)
}

func runCommand[Cmd any](ctx context.Context, h CommandHandler[Cmd], cmd Cmd) (_ struct{}, err error) {
	defer recoverInto(&err)
	return struct{}{}, h.Handle(ctx, cmd)
}

// runner runs a handler of one shape for the wrapped path. Its
// implementations are empty types given as a type parameter: a generic
// function passed as a value would be a closure over its dictionary, one
// allocation per call.
type runner[H, Req, Res any] interface {
	run(ctx context.Context, h H, req Req) (Res, error)
}

type requestRunner[Req, Res any] struct{}

func (requestRunner[Req, Res]) run(ctx context.Context, h RequestHandler[Req, Res], req Req) (Res, error) {
	return runRequest(ctx, h, req)
}

type commandRunner[Cmd any] struct{}

func (commandRunner[Cmd]) run(ctx context.Context, h CommandHandler[Cmd], cmd Cmd) (struct{}, error) {
	return runCommand(ctx, h, cmd)
}

// observe tells the observer a call started; its context becomes the
// parent of everything the call does.
func (m *Mediator) observe(f *engine.Frame, call Call) *observation {
	f.Context = m.obs.CallStarted(f.Context, CallStarted{Call: call})
	return &observation{obs: m.obs, call: call, start: time.Now()}
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

// callWrapped is Send and Exec for a handler that middleware wraps, an
// observer watches or a fallback backs: the observation starts, the chain
// runs the handler through R, the fallback answers if it must, and the
// call ends.
func callWrapped[H, Req, Res any, R runner[H, Req, Res]](m *Mediator, e *handlerEntry, f *engine.Frame, h H, req Req) (Res, error) {
	var (
		zero Res
		call Call
		o    *observation
		r    R
	)
	if e.chain != nil || m.obs != nil { // a Call boxes req: only when someone hears of it
		call = e.callOf(req)
		o = m.observeCall(f, e, call)
	}
	res, used, err := guarded(m, f, e.fallback, e.name,
		func(ctx context.Context) (Res, error) {
			if e.chain == nil {
				return r.run(ctx, h, req)
			}
			out, err := runChain(ctx, e.chain, call, func(ctx context.Context) (any, error) { return r.run(ctx, h, req) })
			return answer[Res](e, out, err)
		},
		func(ctx context.Context) (Res, error) { return r.run(ctx, typedFallback[H](e.fallback), req) })
	if o != nil {
		o.fallback = used
	}
	if err != nil {
		return zero, m.end(f, err, o)
	}
	return res, m.end(f, nil, o)
}

// answer is what a request's middleware chain answered, as a Res; a
// command's chain answers nothing the caller receives.
func answer[Res any](e *handlerEntry, out any, err error) (Res, error) {
	var res Res
	if err != nil || out == nil || e.role != roleRequest {
		return res, err
	}
	res, ok := out.(Res)
	if !ok {
		return res, fmt.Errorf("fxcqrs.Send: middleware answered %T for %s, whose handler returns %s", out, e.msgName, typeName(e.result))
	}
	return res, nil
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
