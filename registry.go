package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"github.com/fxcqrs/fxcqrs/internal/typekey"
)

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

// handlerEntry is the one handler of a request, command or stream type.
type handlerEntry struct {
	role    role
	handler any
	name    string       // the handler's type name
	msgName string       // the request type's name
	chain   []Middleware // the middleware that wraps its calls, in order
	source  string       // the fx constructor, when known
	message reflect.Type // the request type
	result  reflect.Type // Res of request and stream handlers
	nilable bool         // the request type can be a nil pointer

	typed atomic.Value // handler as an *H: see typedHandler
}

// eventHandler is one handler of an event type: what the engine runs
// (its Value and Name), and what the root adds.
type eventHandler struct {
	engine.Handler
	msgName string       // the event type's name
	chain   []Middleware // the middleware that wraps its invocations, in order
	source  string       // the fx constructor, when known
	order   int          // registration order: the last tie-break
}

// registry maps message types to handlers. It is written during
// registration and read without locks afterwards.
type registry struct {
	handlers map[reflect.Type]*handlerEntry
	events   map[reflect.Type][]*eventHandler
	count    int

	// The same, keyed for calls: built once registration is complete.
	handlerTable typekey.Table[*handlerEntry]
}

func newRegistry() *registry {
	return &registry{
		handlers: make(map[reflect.Type]*handlerEntry),
		events:   make(map[reflect.Type][]*eventHandler),
	}
}

// registration is one handler on its way into a registry.
type registration struct {
	role    role
	handler any
	source  string // the fx constructor's name, or ""
}

func (r *registry) add(reg registration) error {
	h := reg.handler
	if h == nil {
		return fmt.Errorf("%s handler is nil%s", reg.role, from(reg.source))
	}
	t := reflect.TypeOf(h)
	if v := reflect.ValueOf(h); (t.Kind() == reflect.Pointer || t.Kind() == reflect.Map || t.Kind() == reflect.Func) && v.IsNil() {
		return fmt.Errorf("%s handler is a nil %s%s", reg.role, typeName(t), from(reg.source))
	}
	spec, err := inspect(reg.role, t)
	if err != nil {
		return fmt.Errorf("%w%s", err, from(reg.source))
	}
	r.count++
	if reg.role == roleEvent {
		eh := &eventHandler{
			Handler: engine.Handler{Value: h, Name: typeName(t)},
			msgName: typeName(spec.message),
			source:  reg.source,
			order:   r.count,
		}
		eh.Root = eh
		r.events[spec.message] = append(r.events[spec.message], eh)
		return nil
	}
	if prev, ok := r.handlers[spec.message]; ok {
		return fmt.Errorf("%s has two handlers: %s (%s handler%s) and %s (%s handler%s)",
			typeName(spec.message),
			prev.name, prev.role, from(prev.source),
			typeName(t), reg.role, from(reg.source))
	}
	k := spec.message.Kind()
	r.handlers[spec.message] = &handlerEntry{
		role:    reg.role,
		handler: h,
		name:    typeName(t),
		msgName: typeName(spec.message),
		source:  reg.source,
		message: spec.message,
		result:  spec.result,
		nilable: k == reflect.Pointer || k == reflect.Interface,
	}
	return nil
}

// sortEvents puts every event's handlers in their documented order: by
// handler type name, then by constructor name, then by registration order.
func (r *registry) sortEvents() {
	for _, hs := range r.events {
		sort.SliceStable(hs, func(i, j int) bool {
			a, b := hs[i], hs[j]
			if a.Name != b.Name {
				return a.Name < b.Name
			}
			if a.source != b.source {
				return a.source < b.source
			}
			return a.order < b.order
		})
	}
}

func from(source string) string {
	if source == "" {
		return ""
	}
	return " from " + source
}

// addAll registers every registration and middleware and reports every
// problem at once.
func (r *registry) addAll(regs []registration, mws []registeredMiddleware) error {
	var errs []error
	for _, reg := range regs {
		if err := r.add(reg); err != nil {
			errs = append(errs, err)
		}
	}
	r.sortEvents()
	for i, mw := range mws {
		if mw.mw == nil {
			errs = append(errs, fmt.Errorf("middleware is nil%s", from(mw.source)))
			continue
		}
		mws[i].name = middlewareName(mw.mw)
		mws[i].seq = i
	}
	mws = slices.DeleteFunc(mws, func(mw registeredMiddleware) bool { return mw.mw == nil })
	sortMiddleware(mws)
	for t, e := range r.handlers {
		e.chain = chainFor(mws, e.role.kind(), t)
	}
	for t, hs := range r.events {
		for _, h := range hs {
			h.chain = chainFor(mws, KindEvent, t)
		}
	}
	handlers := make(map[typekey.Key]*handlerEntry, len(r.handlers))
	for t, e := range r.handlers {
		handlers[typekey.OfType(t)] = e
	}
	r.handlerTable = typekey.NewTable(handlers)
	return errors.Join(errs...)
}

// eventTable gives the engine every event type's handlers, in order. A
// handler with middleware, or under an observer, runs through runEvent.
func (m *Mediator) eventTable() map[typekey.Key][]*engine.Handler {
	table := make(map[typekey.Key][]*engine.Handler, len(m.reg.events))
	for t, hs := range m.reg.events {
		ehs := make([]*engine.Handler, len(hs))
		for i, h := range hs {
			if h.chain != nil || m.obs != nil {
				h.Run = func(f *engine.Frame, rec engine.Record, _ *engine.Handler, queuedAt engine.Mono) error {
					return m.runEvent(f, rec, h, queuedAt)
				}
			}
			ehs[i] = &h.Handler
		}
		table[typekey.OfType(t)] = ehs
	}
	return table
}
