package fxbus

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"
)

// VersionOption sets the version of an event type on the wire. It is both
// a RouteOption and a SubscribeOption. Make one with [Version].
type VersionOption struct{ n int }

// Version declares that the route's or subscription's event type is
// version n of its shape on the wire (the [MetadataVersion] metadata):
// raise it when a change to the type makes a payload written before it
// decode wrong (a renamed or re-typed field), and register an [Upcaster]
// from the old version. A type without it is version 1. The route and the
// subscriptions of one type must agree; on a route of an interface type
// it is an error, as [Name] is.
//
// Rolling deploys follow one rule: upgrade consumers first. A consumer
// reads every version up to its own (older ones through the upcasters); a
// message newer than its type, from a producer upgraded before it, is
// dead-lettered at once with a [*VersionError] that says so, never
// decoded as the older type nor retried, and is replayed from the dead
// letter once the consumer runs the new code. A relay is no consumer: it
// passes a newer stored row on as it is.
//
// The version is declared where the name is, on the route or
// subscription, rather than by a method of the event type: the event
// types stay plain structs (an event's own Version field, an aggregate's,
// is common and could not sit beside a method of that name), and a
// service's wire contract, name and version, reads in one place.
func Version(n int) VersionOption { return VersionOption{n: n} }

func (o VersionOption) applyRoute(r *route)            { r.version = o.n }
func (o VersionOption) applySubscribe(s *subscription) { s.version = o.n }

// Upcaster turns the payload of version From of the event named Name
// into version From+1. Upcasters of one name chain: a message of version
// 1 meets the upcasters from 1, 2, … until it has its type's current
// version ([Version]), before anything decodes it, wherever a stored or
// received message is read: a subscription, the outbox's relay, durable
// delivery, schedules, and the repair of dead letters. Register one with
// [AsUpcaster] (or [Config.Upcasters] without fx).
//
// Up works on the payload as the [Marshaler] encoded it, not on a decoded
// map: the Marshaler is the service's choice (JSON by default, protobuf
// where a route asks), an upcaster that only renames a field need not
// decode the rest, and one that needs a map says so with [UpcastJSON].
// Up must not keep or change the slice it is given.
type Upcaster struct {
	// Name is the event's name on the wire (its [MetadataName]).
	Name string
	// From is the version Up reads; it writes From+1. From 1.
	From int
	// Up returns the payload of version From+1. An error sends the
	// message to its dead letter with the reason: a payload its own
	// upcaster cannot read would not decode either.
	Up func(payload []byte) ([]byte, error)
}

// AsUpcaster registers u with fx for [Module] (the value group
// "fxbus.upcasters"). A chain with a gap or two upcasters from one
// version fails fx.New.
func AsUpcaster(u Upcaster) fx.Option {
	if err := u.validate(); err != nil {
		return fx.Error(err)
	}
	return fx.Provide(fx.Annotate(func() Upcaster { return u }, fx.ResultTags(`group:"fxbus.upcasters"`)))
}

// UpcastJSON is an Upcaster of JSON payloads that changes the decoded
// object in place: up renames, moves, adds or removes its fields.
func UpcastJSON(name string, from int, up func(object map[string]any) error) Upcaster {
	return Upcaster{Name: name, From: from, Up: func(payload []byte) ([]byte, error) {
		var object map[string]any
		if err := json.Unmarshal(payload, &object); err != nil {
			return nil, err
		}
		if err := up(object); err != nil {
			return nil, err
		}
		return json.Marshal(object)
	}}
}

func (u Upcaster) validate() error {
	var errs []error
	if u.Name == "" {
		errs = append(errs, errors.New("fxbus.Upcaster: the Name is empty"))
	}
	if u.From < 1 {
		errs = append(errs, fmt.Errorf("fxbus.Upcaster %q: From must be 1 or more: got %d", u.Name, u.From))
	}
	if u.Up == nil {
		errs = append(errs, fmt.Errorf("fxbus.Upcaster %q from version %d: Up is nil", u.Name, u.From))
	}
	return errors.Join(errs...)
}

// VersionError is why a message cannot be read as its type: its version
// is older than every upcaster chain of its name reaches, or newer than
// the type this service has. A subscription, the relay's in-process
// delivery and the repair tools dead-letter such a message with it as
// the reason, instead of decoding it wrong or retrying it.
type VersionError struct {
	// Name is the event's name on the wire.
	Name string
	// Type is the Go type this service reads the name as.
	Type reflect.Type
	// Version is the message's version.
	Version int
	// Current is the type's version here.
	Current int
	// Oldest is the oldest version the upcasters reach Current from
	// (Current when there are none).
	Oldest int
}

// Newer reports whether the message is newer than the type here: a
// producer was upgraded before this consumer, against the rule (see
// [Version]: upgrade consumers first).
func (e *VersionError) Newer() bool { return e.Version > e.Current }

// Error names the type and both versions.
func (e *VersionError) Error() string {
	if e.Newer() {
		return fmt.Sprintf("fxbus: %q (%s) version %d is newer than this service's version %d: upgrade consumers before producers, then replay it",
			e.Name, e.Type, e.Version, e.Current)
	}
	return fmt.Sprintf("fxbus: %q (%s) version %d has no upcaster path to version %d: the upcasters reach it from version %d only; register an fxbus.Upcaster from version %d",
		e.Name, e.Type, e.Version, e.Current, e.Oldest, e.Version)
}

// chain is what the bus knows of one name's versions.
type chain struct {
	name    string
	typ     reflect.Type
	current int
	oldest  int                                    // the oldest version ups reach current from
	ups     []func(payload []byte) ([]byte, error) // ups[i] reads version oldest+i
}

// versionTable is the bus's versions: by type for the producing side, by
// name for the reading side.
type versionTable struct {
	byType map[reflect.Type]int
	byName map[string]*chain
}

// VersionOf returns the version event type t has on the wire: its route's
// or subscription's [Version], else 1.
func (b *Bus) VersionOf(t reflect.Type) int {
	if v, ok := b.versions.byType[t]; ok {
		return v
	}
	return 1
}

// addVersions fixes each named type's version and chains the upcasters;
// it runs after checkNames. It refuses a version below 1, one on an
// interface route, a type with two versions, and upcasters with a gap,
// two from one version, or one from the current version or later.
func (b *Bus) addVersions(routes []Routing, subs []Subscription, ups []Upcaster) []error {
	var errs []error
	b.versions = versionTable{byType: map[reflect.Type]int{}, byName: map[string]*chain{}}
	declare := func(what string, t reflect.Type, n int) {
		switch {
		case n == 0:
			return
		case n < 0:
			errs = append(errs, fmt.Errorf("fxbus.%s[%s]: Version must be 1 or more: got %d", what, t, n))
		case t.Kind() == reflect.Interface:
			errs = append(errs, fmt.Errorf("fxbus.%s[%s]: Version on a route of an interface type: version the concrete types' routes or subscriptions", what, t))
		default:
			if prev, ok := b.versions.byType[t]; ok && prev != n {
				errs = append(errs, fmt.Errorf("fxbus: %s is declared both version %d and version %d: its routes and subscriptions must agree", t, min(prev, n), max(prev, n)))
				return
			}
			b.versions.byType[t] = n
		}
	}
	for _, r := range routes {
		declare("Route", r.r.typ, r.r.version)
	}
	for _, s := range subs {
		declare("Subscribe", s.s.typ, s.s.version)
	}
	for t, name := range b.names {
		b.versions.byName[name] = &chain{name: name, typ: t, current: b.VersionOf(t)}
	}
	byFrom := map[string]map[int]Upcaster{}
	for _, u := range ups {
		if err := u.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		c := b.versions.byName[u.Name]
		if c == nil {
			errs = append(errs, fmt.Errorf("fxbus.Upcaster %q from version %d: no route or subscription has that name", u.Name, u.From))
			continue
		}
		if u.From >= c.current {
			errs = append(errs, fmt.Errorf("fxbus.Upcaster %q from version %d: %s is version %d; declare fxbus.Version(%d) on its routes and subscriptions", u.Name, u.From, c.typ, c.current, u.From+1))
			continue
		}
		if byFrom[u.Name] == nil {
			byFrom[u.Name] = map[int]Upcaster{}
		}
		if _, dup := byFrom[u.Name][u.From]; dup {
			errs = append(errs, fmt.Errorf("fxbus.Upcaster %q: two upcasters from version %d", u.Name, u.From))
			continue
		}
		byFrom[u.Name][u.From] = u
	}
	for name, froms := range byFrom {
		c := b.versions.byName[name]
		oldest := c.current
		for from := range froms {
			oldest = min(oldest, from)
		}
		var gaps []int
		for v := oldest; v < c.current; v++ {
			if u, ok := froms[v]; ok {
				c.ups = append(c.ups, u.Up)
			} else {
				gaps = append(gaps, v)
			}
		}
		if len(gaps) > 0 {
			errs = append(errs, fmt.Errorf("fxbus.Upcaster %q: the chain from version %d to %d has no upcaster from version %v", name, oldest, c.current, gaps))
			continue
		}
		c.oldest = oldest
	}
	for _, c := range b.versions.byName {
		if c.ups == nil || c.oldest == 0 {
			c.oldest, c.ups = c.current, nil
		}
	}
	return errs
}

// reaches is nil when messages of version v can be read as c's type.
func (c *chain) reaches(v int) error {
	if v > c.current || v < c.oldest {
		return &VersionError{Name: c.name, Type: c.typ, Version: v, Current: c.current, Oldest: c.oldest}
	}
	return nil
}

// Reaches reports whether a stored message named name of the given
// version can be read here: nil when it is current or an upcaster chain
// reaches the current version from it, or when the bus does not know the
// name; a *VersionError otherwise. The outbox's start check asks it for
// each name and version its tables hold.
func (b *Bus) Reaches(name string, version int) error {
	c := b.versions.byName[name]
	if c == nil {
		return nil
	}
	return c.reaches(version)
}

// Upcast brings msg, a message of this bus's event names read from a
// store or a broker, to its type's current version in place: its
// payload through the upcasters, its [MetadataVersion] to the current
// version. A message whose name the bus does not know, or already
// current, is left as it is. A version no chain reaches, or one newer
// than the type here, is a *VersionError, and msg is unchanged; so is an
// upcaster's error, wrapped. The outbox module calls it wherever it reads
// a stored message.
func (b *Bus) Upcast(msg *message.Message) error {
	return b.upcastNamed(msg.Metadata.Get(MetadataName), msg)
}

// upcastNamed is Upcast for a message of the given name (a subscription
// reads a nameless message as its topic's only type).
func (b *Bus) upcastNamed(name string, msg *message.Message) error {
	raw := msg.Metadata.Get(MetadataVersion)
	c := b.versions.byName[name]
	if c == nil || (c.current == 1 && (raw == "" || raw == "1")) {
		return nil // the common case, at the cost of a map look-up
	}
	v := 1
	if raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			return fmt.Errorf("fxbus: %q metadata %q is not a version: a decimal integer from 1", MetadataVersion, raw)
		}
		v = n
	}
	if v == c.current {
		return nil
	}
	if err := c.reaches(v); err != nil {
		return err
	}
	payload := msg.Payload
	for from := v; from < c.current; from++ {
		next, err := c.ups[from-c.oldest](payload)
		if err != nil {
			return fmt.Errorf("fxbus: upcast %q from version %d to %d: %w", name, from, from+1, err)
		}
		payload = next
	}
	msg.Payload = payload
	msg.Metadata.Set(MetadataVersion, strconv.Itoa(c.current))
	return nil
}

// upcastInbound brings a message a subscription of ts received to its
// type's current version, before its name is looked up and it is decoded
// (and so before any inbox records it): a version no chain reaches, one
// newer than the type here, or an upcaster that fails sends it to the
// dead letter at once, with the reason, as a message that cannot be
// decoded goes; retrying it would fail alike.
func (b *Bus) upcastInbound(ts *topicSubs, name string, msg *message.Message) error {
	if name == "" && ts.only != nil {
		name = b.nameOf(ts.only.typ)
	}
	if err := b.upcastNamed(name, msg); err != nil {
		return &malformed{err: err}
	}
	return nil
}
