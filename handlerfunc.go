package fxcqrs

import (
	"context"
	"fmt"
	"strings"
	"unicode"
)

// NamedHandler is a handler that gives its own name, in place of its
// type's: the name logs, spans, errors and Call.Handler carry, the one by
// which a type's event handlers are ordered, and the one fxoutbox's inbox
// records an effect under. A handler's type name changes when the type is
// renamed or moved; a name given here does not, so renaming the Go type
// never makes the inbox run an effect again. EventFunc, CommandFunc and
// RequestFunc return NamedHandlers; a handler type may implement it too.
//
// Two handlers of one event type may not share a name that either of
// them gives (New, and so fx.Start under Module, fail naming both).
type NamedHandler interface {
	// HandlerName returns the handler's name: not empty, no spaces.
	HandlerName() string
}

// EventFunc returns an event handler of E that calls f, named name (see
// NamedHandler). With it one type can handle many event types, a
// method value each, where a handler type has one Handle method:
//
//	fxcqrs.AsEventHandler(func(p *Projector) fxcqrs.EventHandler[RoomBooked] {
//		return fxcqrs.EventFunc("projector.booked", p.Booked)
//	}),
//	fxcqrs.AsEventHandler(func(p *Projector) fxcqrs.EventHandler[RoomCancelled] {
//		return fxcqrs.EventFunc("projector.cancelled", p.Cancelled)
//	}),
//
// or, without fx, WithEventHandlers(fxcqrs.EventFunc(…), …).
func EventFunc[E any](name string, f func(ctx context.Context, event E) error) EventHandler[E] {
	return &eventFunc[E]{name: name, f: f}
}

// CommandFunc returns a command handler of C that calls f, named name
// (see NamedHandler).
func CommandFunc[C any](name string, f func(ctx context.Context, cmd C) error) CommandHandler[C] {
	return &commandFunc[C]{name: name, f: f}
}

// RequestFunc returns a request handler of Req that calls f, named name
// (see NamedHandler).
func RequestFunc[Req, Res any](name string, f func(ctx context.Context, req Req) (Res, error)) RequestHandler[Req, Res] {
	return &requestFunc[Req, Res]{name: name, f: f}
}

type eventFunc[E any] struct {
	name string
	f    func(context.Context, E) error
}

func (h *eventFunc[E]) Handle(ctx context.Context, e E) error { return h.f(ctx, e) }
func (h *eventFunc[E]) HandlerName() string                   { return h.name }
func (h *eventFunc[E]) isNil() bool                           { return h.f == nil }

type commandFunc[C any] struct {
	name string
	f    func(context.Context, C) error
}

func (h *commandFunc[C]) Handle(ctx context.Context, c C) error { return h.f(ctx, c) }
func (h *commandFunc[C]) HandlerName() string                   { return h.name }
func (h *commandFunc[C]) isNil() bool                           { return h.f == nil }

type requestFunc[Req, Res any] struct {
	name string
	f    func(context.Context, Req) (Res, error)
}

func (h *requestFunc[Req, Res]) Handle(ctx context.Context, r Req) (Res, error) { return h.f(ctx, r) }
func (h *requestFunc[Req, Res]) HandlerName() string                            { return h.name }
func (h *requestFunc[Req, Res]) isNil() bool                                    { return h.f == nil }

// handlerName is h's name: the one it gives (NamedHandler), checked, or
// its type's. named reports whether h gave it.
func handlerName(h any, typeName string) (name string, named bool, err error) {
	n, ok := h.(NamedHandler)
	if !ok {
		return typeName, false, nil
	}
	if f, ok := h.(interface{ isNil() bool }); ok && f.isNil() {
		return "", true, fmt.Errorf("the handler named %q has a nil func", n.HandlerName())
	}
	name = n.HandlerName()
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return "", true, fmt.Errorf("%s names itself %q: a handler's name is not empty and has no spaces", typeName, name)
	}
	return name, true, nil
}
