package fxbus

import (
	"cmp"
	"reflect"
	"slices"
)

// Contract is what a bus sends and receives, for a document of a
// service's asynchronous contract (the asyncapi package writes AsyncAPI
// 3.0 from it).
type Contract struct {
	// Routes are the routes, by topic, then event name.
	Routes []ContractRoute
	// Subscriptions are the subscriptions, by topic, then event name.
	Subscriptions []ContractSubscription
}

// ContractRoute is a route in a Contract.
type ContractRoute struct {
	// Topic is the route's topic.
	Topic string
	// Type is the event type; an interface type stands for every event
	// type that implements it.
	Type reflect.Type
	// Name is the event's name on the wire ([MetadataName]); "" for an
	// interface type's route.
	Name string
	// Version is the version of the event type the route writes
	// ([Version], [MetadataVersion]): 1 when undeclared; 0 for an
	// interface type's route, whose events each have their own.
	Version int
	// Keyed says that the route gives each event a key ([KeyBy],
	// [MetadataKey]).
	Keyed bool
	// ContentType is the payload's media type: the route's Marshaler's.
	ContentType string
	// CloudEvents is the route's CloudEvents configuration; nil when it
	// writes fxcqrs's own format.
	CloudEvents *CloudEventsConfig
}

// ContractSubscription is a subscription in a Contract.
type ContractSubscription struct {
	// Topic is the subscribed topic.
	Topic string
	// Type is the event type.
	Type reflect.Type
	// Name is the event's name on the wire.
	Name string
	// Version is the version of the event type ([Version]): 1 when
	// undeclared. Messages of this version are decoded as they are.
	Version int
	// Oldest is the oldest version the subscription reads: the one its
	// name's upcaster chain starts from ([Upcaster]), Version when it has
	// none. Versions from Oldest to Version are read; others are
	// dead-lettered with a [*VersionError].
	Oldest int
	// ContentType is the media type the subscription decodes by default:
	// its Marshaler's.
	ContentType string
	// DeadLetter is the topic its failed messages go to.
	DeadLetter string
	// InOrder says that the subscription keeps each key's order.
	InOrder bool
}

// Contract returns the bus's routes and subscriptions.
func (b *Bus) Contract() Contract {
	var c Contract
	seen := map[*route]bool{}
	for _, rs := range b.routes {
		for i := range rs {
			r := &rs[i]
			if seen[r] {
				continue
			}
			seen[r] = true
			name, version := "", 0
			if r.typ.Kind() != reflect.Interface {
				name, version = b.nameOf(r.typ), b.VersionOf(r.typ)
			}
			c.Routes = append(c.Routes, ContractRoute{
				Topic: r.topic, Type: r.typ, Name: name, Version: version, Keyed: r.key != nil,
				ContentType: b.marshalerOf(*r).ContentType(), CloudEvents: r.ce,
			})
		}
	}
	for _, ts := range b.topics {
		for name, s := range ts.byName {
			m := s.marshaler
			if m == nil {
				m = b.cfg.Marshaler
			}
			version := b.VersionOf(s.typ)
			oldest := version
			if ch := b.versions.byName[name]; ch != nil {
				version, oldest = ch.current, ch.oldest
			}
			c.Subscriptions = append(c.Subscriptions, ContractSubscription{
				Topic: ts.topic, Type: s.typ, Name: name, Version: version, Oldest: oldest,
				ContentType: m.ContentType(), DeadLetter: ts.dead, InOrder: ts.inOrder,
			})
		}
	}
	slices.SortFunc(c.Routes, func(a, b ContractRoute) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Type.String(), b.Type.String()))
	})
	slices.SortFunc(c.Subscriptions, func(a, b ContractSubscription) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Name, b.Name))
	})
	return c
}
