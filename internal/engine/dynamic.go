package engine

import (
	"context"
	"reflect"
	"sort"
	"sync"

	"github.com/fxcqrs/fxcqrs/internal/typekey"
)

// Events whose static type is an interface (an aggregate's []DomainEvent,
// or any) are routed by their dynamic type, and handlers whose event type
// is an interface receive every event that implements it. Neither type is
// known to the compiler where the call happens, so these paths, and only
// these, use reflection: the dynamic event is copied into a fresh *T, and
// the handler's Handle method is called through reflect. What can be
// computed once per type is cached.

// dynamicType is the eventType of records made from an interface value.
type dynamicType struct{ t reflect.Type }

var dynamicTypes sync.Map // reflect.Type → *dynamicType

func dynamicTypeOf(t reflect.Type) *dynamicType {
	if d, ok := dynamicTypes.Load(t); ok {
		return d.(*dynamicType)
	}
	d, _ := dynamicTypes.LoadOrStore(t, &dynamicType{t: t})
	return d.(*dynamicType)
}

func (d *dynamicType) reflectType() reflect.Type { return d.t }

func (d *dynamicType) call(ctx context.Context, h *Handler, p any) error {
	return h.callReflect(ctx, reflect.ValueOf(p).Elem())
}

func (d *dynamicType) box(p any) any { return reflect.ValueOf(p).Elem().Interface() }

func (d *dynamicType) clone(p any) any {
	c := reflect.New(d.t)
	c.Elem().Set(reflect.ValueOf(p).Elem())
	return c.Interface()
}

// isInterface reports whether E is an interface type: the only types whose
// zero value boxes to a nil interface.
func isInterface[E any]() bool {
	var zero E
	return any(zero) == nil
}

// DynamicRecord makes a record of v routed by its dynamic type. It
// reports false for a nil v.
func DynamicRecord(v any) (Record, bool) {
	if v == nil {
		return Record{}, false
	}
	rv := reflect.ValueOf(v)
	p := reflect.New(rv.Type())
	p.Elem().Set(rv)
	return Record{value: p.Interface(), typ: dynamicTypeOf(rv.Type())}, true
}

// Prepare readies h to be called with events of type event, its Handle
// method's: a handler of an interface type is called by reflection.
// SetHandlers prepares the handlers it is given.
func (h *Handler) Prepare(event reflect.Type) {
	h.method = reflect.ValueOf(h.Value).MethodByName("Handle")
	h.iface = event.Kind() == reflect.Interface
}

// callReflect calls h's Handle with the event v, which is assignable to
// h's event type.
func (h *Handler) callReflect(ctx context.Context, v reflect.Value) error {
	out := h.method.Call([]reflect.Value{reflect.ValueOf(&ctx).Elem(), v})
	err, _ := out[0].Interface().(error)
	return err
}

// Interface is the handlers of one interface event type, in their order.
type Interface struct {
	Type     reflect.Type // the interface
	Handlers []*Handler   // its handlers, in their order
}

// resolver finds the handlers of event types that are not in the table:
// those with no handler of their own that implement an interface with
// handlers, and those nobody handles. Each type is resolved once.
type resolver struct {
	ifaces    []Interface // by type name
	unhandled func(reflect.Type)
	resolved  sync.Map // typekey.Key → []*Handler
}

func (r *resolver) handlers(k typekey.Key, rec *Record) []*Handler {
	if hs, ok := r.resolved.Load(k); ok {
		return hs.([]*Handler)
	}
	typ := rec.Type()
	hs := implementers(r.ifaces, typ, nil)
	if len(hs) == 0 && r.unhandled != nil {
		r.unhandled(typ)
	}
	actual, _ := r.resolved.LoadOrStore(k, hs)
	return actual.([]*Handler)
}

// implementers appends to hs the handlers of every interface t implements,
// in the interfaces' order.
func implementers(ifaces []Interface, t reflect.Type, hs []*Handler) []*Handler {
	for _, i := range ifaces {
		if t.Implements(i.Type) {
			hs = append(hs, i.Handlers...)
		}
	}
	return hs
}

// SetHandlers installs the handlers of every event type, in the order they
// run, and makes the engine ready for calls. concrete maps each concrete
// event type to its own handlers; ifaces lists the handlers of interface
// event types, which run after the concrete type's own, by interface type
// name. unhandled, when set, is called once for each event type that turns
// out to have no handler at all.
func (e *Engine) SetHandlers(concrete map[reflect.Type][]*Handler, ifaces []Interface, unhandled func(reflect.Type)) {
	ifaces = append([]Interface(nil), ifaces...)
	sort.Slice(ifaces, func(i, j int) bool { return typeName(ifaces[i].Type) < typeName(ifaces[j].Type) })
	prepare := func(hs []*Handler, event reflect.Type) {
		for _, h := range hs {
			h.Prepare(event)
		}
	}
	for _, i := range ifaces {
		prepare(i.Handlers, i.Type)
	}
	table := make(map[typekey.Key][]*Handler, len(concrete))
	for t, hs := range concrete {
		prepare(hs, t)
		table[typekey.OfType(t)] = implementers(ifaces, t, append([]*Handler(nil), hs...))
	}
	e.table = typekey.NewTable(table)
	e.resolve = &resolver{ifaces: ifaces, unhandled: unhandled}
	e.calls.clear(flightNotReady)
}

// emitDynamic records v, an event emitted with an interface static type,
// by its dynamic type.
func emitDynamic(f *Frame, v any, static reflect.Type) {
	rec, ok := DynamicRecord(v)
	if !ok {
		panic("fxcqrs.Emit: nil " + static.String() + " event: an event of an interface type must hold a value")
	}
	b := f.lockEmit()
	if b == nil {
		f.buf.owner.eng.lateEmit(rec.Type())
		return
	}
	b.recs = append(b.recs, rec)
	f.state.unlockFilled()
}
