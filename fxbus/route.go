package fxbus

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"go.uber.org/fx"
)

// route sends the events of one type (or of every type implementing an
// interface) to one topic.
type route struct {
	topic string
	typ   reflect.Type
	name  string // the event's name on the wire; "" for the default

	keyType reflect.Type     // the type KeyBy was given; nil: no key
	key     func(any) string // the event's key (see KeyBy)

	within    time.Duration // DeliverWithin; 0: the messages do not expire
	withinSet bool
	version   int                // the event type's version on the wire; 0: undeclared (see Version)
	ce        *CloudEventsConfig // the route writes CloudEvents (see CloudEvents); nil: fxcqrs's own format
	marshaler Marshaler          // see Marshal; nil: the bus's
}

// RouteOption configures a route.
type RouteOption interface{ applyRoute(*route) }

// NameOption sets an event's name on the wire. It is both a RouteOption
// and a SubscribeOption. Make one with [Name].
type NameOption struct{ name string }

// Name sets the event's name on the wire (the [MetadataName] metadata),
// instead of its Go type's bare name: for a name shared with services in
// other languages, or to keep the wire stable when a type is renamed. On a
// route of an interface type it is an error: the name belongs to the
// concrete type.
func Name(name string) NameOption { return NameOption{name: name} }

func (o NameOption) applyRoute(r *route)            { r.name = o.name }
func (o NameOption) applySubscribe(s *subscription) { s.name = o.name }

// KeyOption gives each event of a route a key. Make one with [KeyBy].
type KeyOption struct {
	typ reflect.Type
	key func(any) string
}

// KeyBy gives each event of the route a key, such as its aggregate's id:
// the relay and the consumers that ask for it ([InOrder]) keep the order
// of one key's events while events of different keys go in parallel. The
// key travels in the message's [MetadataKey] metadata, for consumers in
// other languages; an empty key is no key. E must be the route's own type
// parameter.
//
// Without a key, a route's events keep their topic's order, as they
// always have.
func KeyBy[E any](key func(E) string) KeyOption {
	o := KeyOption{typ: reflect.TypeFor[E]()}
	if key != nil {
		o.key = func(ev any) string { return key(ev.(E)) }
	}
	return o
}

func (o KeyOption) applyRoute(r *route) { r.keyType, r.key = o.typ, o.key }

// keyOf is the route's key for ev: "" without KeyBy.
func (r route) keyOf(ev any) string {
	if r.key == nil {
		return ""
	}
	return r.key(ev)
}

// Routing is a route made for [New], without fx. Make one with [NewRoute].
type Routing struct {
	r   route
	err error
}

// NewRoute is [Route] for [New]: events of type E that handlers emit are
// published to topic.
func NewRoute[E any](topic string, opts ...RouteOption) Routing {
	r := route{topic: topic, typ: reflect.TypeFor[E]()}
	for _, opt := range opts {
		opt.applyRoute(&r)
	}
	var errs []error
	if topic == "" {
		errs = append(errs, fmt.Errorf("fxbus.Route[%s]: the topic is empty", r.typ))
	}
	if r.typ.Kind() == reflect.Interface && r.name != "" {
		errs = append(errs, fmt.Errorf("fxbus.Route[%s]: Name on a route of an interface type: name the concrete types' routes or subscriptions", r.typ))
	}
	if r.keyType != nil && r.keyType != r.typ {
		errs = append(errs, fmt.Errorf("fxbus.Route[%s]: KeyBy[%s] on it: give KeyBy the route's own type", r.typ, r.keyType))
	}
	if r.keyType != nil && r.key == nil {
		errs = append(errs, fmt.Errorf("fxbus.Route[%s]: KeyBy with a nil function", r.typ))
	}
	if r.withinSet && r.within <= 0 {
		errs = append(errs, fmt.Errorf("fxbus.Route[%s]: DeliverWithin must be positive: got %v", r.typ, r.within))
	}
	errs = append(errs, checkCloudEvents(r))
	return Routing{r: r, err: errors.Join(errs...)}
}

// Route sends the events of type E that handlers emit to topic, through
// the Watermill publisher that [Module] takes, once the handler and its
// whole middleware chain have succeeded; they are still processed
// in-process by their own handlers. When E is an interface type, every
// event whose type implements it is routed. An event that matches several
// routes goes to each of their topics once.
//
// Without an outbox this is a dual write: see the package documentation
// for what it can lose.
func Route[E any](topic string, opts ...RouteOption) fx.Option {
	r := NewRoute[E](topic, opts...)
	if r.err != nil {
		return fx.Error(r.err)
	}
	return fx.Provide(fx.Annotate(func() Routing { return r }, fx.ResultTags(`group:"fxbus.routes"`)))
}
