package fxcqrs

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"github.com/fxcqrs/fxcqrs/internal/typekey"
)

// handlerEntry is the one handler of a request, command or stream type.
type handlerEntry struct {
	role     role
	handler  any
	name     string       // the handler's type name
	msgName  string       // the request type's name
	chain    []Middleware // the middleware that wraps its calls, in order
	enders   []callEnder  // members of chain told the call's final result
	fallback *fallback    // nil when it has none
	source   string       // the fx constructor, when known
	message  reflect.Type // the request type
	result   reflect.Type // Res of request and stream handlers
	nilable  nilable      // whether a request can be nil, and how to tell
	direct   bool         // no middleware, observer or fallback: the fast path
	named    bool         // the message type names its calls (callNamer)

	typed atomic.Value // handler as an *H: see typedHandler
}

// nilable is whether a request type has a nil value a call refuses.
type nilable uint8

const (
	notNilable nilable = iota
	nilablePointer
	nilableInterface
)

func nilableOf(t reflect.Type) nilable {
	switch t.Kind() {
	case reflect.Pointer:
		return nilablePointer
	case reflect.Interface:
		return nilableInterface
	}
	return notNilable
}

// eventHandler is one handler of an event type: what the engine runs
// (its Value and Name), and what the root adds.
type eventHandler struct {
	engine.Handler
	event    reflect.Type // the event type of its Handle method
	msgName  string       // the event type's name
	chain    []Middleware // the middleware that wraps its invocations, in order
	fallback *fallback    // nil when it has none
	source   string       // the fx constructor, when known
	order    int          // registration order: the last tie-break
	named    bool         // its Name is its own (NamedHandler), not its type's
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
	name, named, err := handlerName(h, typeName(t))
	if err != nil {
		return fmt.Errorf("%s handler: %w%s", reg.role, err, from(reg.source))
	}
	r.count++
	if reg.role == roleEvent {
		eh := &eventHandler{
			Handler: engine.Handler{Value: h, Name: name},
			event:   spec.message,
			msgName: typeName(spec.message),
			source:  reg.source,
			order:   r.count,
			named:   named,
		}
		eh.Root = eh
		r.events[spec.message] = append(r.events[spec.message], eh)
		return nil
	}
	if prev, ok := r.handlers[spec.message]; ok {
		return fmt.Errorf("%s has two handlers: %s (%s handler%s) and %s (%s handler%s)",
			typeName(spec.message),
			prev.name, prev.role, from(prev.source),
			name, reg.role, from(reg.source))
	}
	r.handlers[spec.message] = &handlerEntry{
		role:    reg.role,
		handler: h,
		name:    name,
		msgName: typeName(spec.message),
		source:  reg.source,
		message: spec.message,
		result:  spec.result,
		nilable: nilableOf(spec.message),
		named:   spec.message.Implements(reflect.TypeFor[callNamer]()),
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

// sameNames reports each name that two handlers of one event type share
// where either gave it itself (NamedHandler): the inbox would know them as
// one handler. Two handlers of one type, neither named, keep their type's
// name as before (the outbox refuses them where its inbox records them).
func (r *registry) sameNames() []error {
	var errs []error
	for t, hs := range r.events {
		for i := 1; i < len(hs); i++ { // sorted by name: equal names are neighbours
			a, b := hs[i-1], hs[i]
			if a.Name == b.Name && (a.named || b.named) {
				errs = append(errs, fmt.Errorf("%s has two handlers named %q%s and%s: a handler's name is what the inbox records its effects under; give each its own",
					typeName(t), a.Name, from(a.source), fromOr(b.source, " another")))
			}
		}
	}
	return errs
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
	errs = append(errs, r.sameNames()...)
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
		e.enders = endersOf(e.chain)
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

// messageType is the name of the event h handles in rec: its own event
// type's, or, for a handler of an interface type, the event's.
func (h *eventHandler) messageType(rec engine.Record) string {
	if h.event.Kind() == reflect.Interface {
		return typeName(rec.Type())
	}
	return h.msgName
}

// mismatch is the error of a call that asked e's handler to be a want (a
// RequestHandler or StreamHandler of some Res) that it is not: it names the
// response type the handler has and the one asked for.
func (e *handlerEntry) mismatch(api string, want reflect.Type) error {
	asked, err := inspect(e.role, want)
	if e.result == nil || err != nil {
		return fmt.Errorf("fxcqrs: internal error: %T does not handle %s", e.handler, e.msgName)
	}
	return fmt.Errorf("fxcqrs.%s: the handler of %s (%s) returns %s, not %s", api, e.msgName, e.name, typeName(e.result), typeName(asked.result))
}

// callOf is what middleware and observers see of a call to e's handler
// with msg.
func (e *handlerEntry) callOf(msg any) Call {
	call := Call{Kind: e.role.kind(), Message: msg, MessageType: e.msgName, Handler: e.name}
	if e.named {
		call.MessageType = msg.(callNamer).CallName()
	}
	return call
}
