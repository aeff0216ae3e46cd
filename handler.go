package fxcqrs

import (
	"context"
	"fmt"
	"iter"
	"reflect"
	"strings"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// RequestHandler handles a request of type Req and answers with a Res.
// It is called through [Send]; a request type has exactly one handler.
//
// Register it with [AsRequestHandler] under fx or [WithRequestHandlers]
// with [New]. The mediator finds Req and Res from the Handle method when the
// handler is registered, so registration takes no type parameters.
type RequestHandler[Req, Res any] interface {
	// Handle answers req. Its events (see [Emit]) are processed after it
	// returns successfully and before Send returns.
	Handle(ctx context.Context, req Req) (Res, error)
}

// CommandHandler handles a command of type Cmd that answers with nothing
// but an error. It is called through [Exec]; a command type has exactly one
// handler.
type CommandHandler[Cmd any] interface {
	// Handle carries out cmd. Its events are processed after it returns
	// successfully and before Exec returns.
	Handle(ctx context.Context, cmd Cmd) error
}

// StreamHandler handles a request of type Req by yielding a sequence of
// Res items. It is called through [Stream]; a stream request type has
// exactly one handler.
//
// The events the handler emits before yielding an item are processed
// before the consumer receives that item. Yielding a non-nil error ends the
// stream with that error.
type StreamHandler[Req, Res any] interface {
	// Handle returns the sequence of req's items. It must stop when yield
	// returns false.
	Handle(ctx context.Context, req Req) iter.Seq2[Res, error]
}

// EventHandler handles an event of type E. An event type may have any
// number of handlers, none included; they run in the order documented in
// the package overview under "Event handler order".
//
// A command handler and an event handler have the same Handle shape: which
// one a value is depends on how it is registered ([AsEventHandler] or
// [WithEventHandlers]).
type EventHandler[E any] interface {
	// Handle reacts to event. When E is an interface type, it receives
	// every event whose type implements E.
	Handle(ctx context.Context, event E) error
}

// role is how a handler was registered: as a request, command, stream or
// event handler. Request, command and stream handlers share one namespace
// of message types: a type has one handler in one role.
type role uint8

const (
	roleRequest role = iota + 1
	roleCommand
	roleStream
	roleEvent
)

func (k role) String() string {
	switch k {
	case roleRequest:
		return "request"
	case roleCommand:
		return "command"
	case roleStream:
		return "stream"
	case roleEvent:
		return "event"
	}
	return "unknown"
}

// registeredAs names what registers a handler in role k.
func (k role) registeredAs() string {
	switch k {
	case roleRequest:
		return "AsRequestHandler / WithRequestHandlers"
	case roleCommand:
		return "AsCommandHandler / WithCommandHandlers"
	case roleStream:
		return "AsStreamHandler / WithStreamHandlers"
	}
	return "AsEventHandler / WithEventHandlers"
}

// signature is the Handle method a handler in role k needs.
func (k role) signature() string {
	switch k {
	case roleRequest:
		return "Handle(context.Context, Req) (Res, error)"
	case roleCommand:
		return "Handle(context.Context, Cmd) error"
	case roleStream:
		return "Handle(context.Context, Req) iter.Seq2[Res, error]"
	case roleEvent:
		return "Handle(context.Context, E) error"
	}
	return ""
}

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
)

// handlerSpec is what registration learns from a handler type's Handle
// method; it is the only place where the mediator uses reflection on
// handlers, and it runs once per handler, at registration.
type handlerSpec struct {
	role    role
	handler reflect.Type // the handler's own type
	message reflect.Type // Req, Cmd or E
	result  reflect.Type // Res for request and stream handlers, else nil
}

// inspect checks that t has the Handle method a handler in role k needs.
// The error says what t has and what it needed.
func inspect(k role, t reflect.Type) (handlerSpec, error) {
	spec := handlerSpec{role: k, handler: t}
	m, ok := t.MethodByName("Handle")
	if !ok {
		if t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface {
			if _, ok := reflect.PointerTo(t).MethodByName("Handle"); ok {
				return spec, fmt.Errorf("%s has no method Handle, but *%s has: use a pointer", typeName(t), typeName(t))
			}
		}
		return spec, fmt.Errorf("%s has no method Handle; a %s handler needs %s", typeName(t), k, k.signature())
	}
	ft := m.Type
	in := make([]reflect.Type, 0, 2)
	first := 1 // a concrete type's method type has the receiver first
	if t.Kind() == reflect.Interface {
		first = 0
	}
	for i := first; i < ft.NumIn(); i++ {
		in = append(in, ft.In(i))
	}
	bad := func() (handlerSpec, error) {
		return spec, fmt.Errorf("%s has %s; a %s handler needs %s", typeName(t), describeMethod(ft, first), k, k.signature())
	}
	if len(in) != 2 || in[0] != contextType || ft.IsVariadic() {
		return bad()
	}
	spec.message = in[1]
	switch k {
	case roleRequest:
		if ft.NumOut() != 2 || ft.Out(1) != errorType {
			return bad()
		}
		spec.result = ft.Out(0)
	case roleCommand, roleEvent:
		if ft.NumOut() != 1 || ft.Out(0) != errorType {
			return bad()
		}
	case roleStream:
		if ft.NumOut() != 1 {
			return bad()
		}
		res, ok := seq2Item(ft.Out(0))
		if !ok {
			return bad()
		}
		spec.result = res
	}
	return spec, nil
}

// seq2Item returns Res when t is exactly iter.Seq2[Res, error]. The named
// type matters: Go matches interface methods by identical signatures, so a
// Handle that returns an unnamed func type does not implement
// StreamHandler.
func seq2Item(t reflect.Type) (reflect.Type, bool) {
	if t.Kind() != reflect.Func || t.PkgPath() != "iter" || !strings.HasPrefix(t.Name(), "Seq2[") {
		return nil, false
	}
	yield := t.In(0)
	if yield.In(1) != errorType {
		return nil, false
	}
	return yield.In(0), true
}

// describeMethod renders a method type without its receiver.
func describeMethod(ft reflect.Type, first int) string {
	var b strings.Builder
	b.WriteString("Handle(")
	for i := first; i < ft.NumIn(); i++ {
		if i > first {
			b.WriteString(", ")
		}
		b.WriteString(ft.In(i).String())
	}
	b.WriteString(")")
	switch ft.NumOut() {
	case 0:
	case 1:
		b.WriteString(" " + ft.Out(0).String())
	default:
		b.WriteString(" (")
		for i := range ft.NumOut() {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(ft.Out(i).String())
		}
		b.WriteString(")")
	}
	return b.String()
}

// typeName is a type's full name with its package path, the key that
// orders event handlers and the name errors use.
func typeName(t reflect.Type) string { return engine.TypeName(t) }

// fromOr is from(source), or alt when source is unknown.
func fromOr(source, alt string) string {
	if source == "" {
		return alt
	}
	return from(source)
}

func from(source string) string {
	if source == "" {
		return ""
	}
	return " from " + source
}
