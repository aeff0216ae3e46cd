package fxbus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/zap"
)

// This file makes a Bus: its routes, subscriptions and names on the wire.
// What leaves is in outbound.go, the router that consumes in router.go,
// what arrives in inbound.go.

// Bus takes routed events out of the process and brings subscribed ones
// in. It is the fxcqrs.Forwarder of its mediator. Under fx, [Module] makes
// one; without fx, make one with [New], pass it to fxcqrs.WithForwarder,
// then Start it with the mediator.
type Bus struct {
	cfg    Config
	log    *zap.Logger
	owned  *embedded // the in-process broker, when no broker was given: let go of by Stop
	names  map[reflect.Type]string
	routes map[reflect.Type][]route // by exact type, interfaces included
	ifaces []route                  // routes of interface types
	topics map[string]*topicSubs    // subscriptions by topic

	resolved sync.Map // reflect.Type → []route: every route an event type matches

	versions versionTable // the types' versions and the names' upcasters (version.go)

	declared []declared // every topic the routes, subscriptions and dead letters declare

	mu          sync.Mutex
	provisioned bool // Provision made the declared topics
	router      *message.Router
	stopped     chan struct{}      // closed when the router's Run returned
	runErr      error              // the router's Run's error, read once stopped is closed
	unsubscribe context.CancelFunc // ends the subscriptions Start made
	settled     chan struct{}      // a message in flight was acknowledged or nacked

	handled, deadLettered, redelivered, skipped atomic.Uint64
	expired                                     atomic.Uint64 // dead-lettered because received after their deliver-by; not in deadLettered
	parkedMsgs                                  atomic.Uint64 // messages parked behind their key's dead letter
	received, attempts                          atomic.Uint64 // messages, and attempts at them: the difference is retries
	throttled                                   atomic.Uint64 // messages that waited for a rate limit's budget

	ownLimiter   sync.Once // makes localLimiter, without Config.Limiter
	localLimiter Limiter
}

// Stats counts what the bus's subscriptions did with the messages they
// got, since the bus was made, for metrics (the otel module's read them).
type Stats struct {
	// Handled is the messages whose handlers succeeded: acknowledged.
	Handled uint64
	// Retried is the attempts made again after a failure, in the process
	// (see Retry).
	Retried uint64
	// DeadLettered is the messages sent to their dead letter topic, after
	// their retries or at once (a message that cannot be decoded).
	DeadLettered uint64
	// Expired is the messages among DeadLettered that came after their
	// deliver-by time (see DeliverWithin): dead-lettered unhandled.
	Expired uint64
	// Redelivered is the messages nacked for the broker to deliver again:
	// the mediator was stopping, or the message's context ended.
	Redelivered uint64
	// Skipped is the messages no subscription of their topic takes (their
	// event name has none): acknowledged, unhandled.
	Skipped uint64
	// Parked is the messages parked behind their key's dead letter
	// (see InOrder): acknowledged, recorded, not yet handled.
	Parked uint64
	// Throttled is the messages that waited for their rate limit's
	// budget (see RateLimit) before they were handled, each counted once.
	Throttled uint64
	// InFlight is the messages between delivery and ack or nack, now.
	InFlight int64
}

// Stats returns the bus's counters.
func (b *Bus) Stats() Stats {
	n, _ := b.inFlight()
	// Attempts first: a message received between the two reads counts
	// in received only, which can undercount retries for a moment, never
	// invent one.
	attempts := b.attempts.Load()
	retried := attempts - min(b.received.Load(), attempts)
	// Failures and expiries are counted apart, each once, so that
	// DeadLettered-Expired (the failures) never goes down between two
	// reads, as a monitoring counter must not.
	failed, expired := b.deadLettered.Load(), b.expired.Load()
	return Stats{
		Handled: b.handled.Load(), Retried: retried, DeadLettered: failed + expired,
		Expired: expired, Redelivered: b.redelivered.Load(), Skipped: b.skipped.Load(), Parked: b.parkedMsgs.Load(), Throttled: b.throttled.Load(), InFlight: n,
	}
}

// topicSubs is the subscriptions of one topic: one Watermill handler.
type topicSubs struct {
	topic   string
	byName  map[string]*subscription
	only    *subscription // the topic's one subscription, if it has one
	retry   RetryPolicy
	dead    string
	limit   int  // messages in flight at most; 0: the default (see InFlight)
	inOrder bool // see InOrder

	fair      Per  // see FairShares; 0: none
	lookahead int  // see Lookahead; 0: the default
	limited   bool // a subscription of the topic has a RateLimit

	inFlight atomic.Int64 // messages between delivery and ack or nack
	parked   parkedKeys   // with inOrder: the keys known to be parked
	decoded  sync.Map     // *message.Message → *decoded: the messages being processed
}

var _ fxcqrs.Forwarder = (*Bus)(nil)

// New returns a bus with the given routes and subscriptions. It reports
// every problem at once: a route without a publisher, a subscription
// without a subscriber, two routes of one type to one topic, two types
// with one name on the wire, and a topic (a route's, a subscription's or
// a dead letter's) that the publisher or the subscriber, when it is a
// [Broker], does not take: the error names the topic, what declared it
// and the broker's rule.
func New(cfg Config, routes []Routing, subs []Subscription) (*Bus, error) {
	b := &Bus{
		cfg:     cfg,
		log:     cfg.Logger,
		names:   map[reflect.Type]string{},
		routes:  map[reflect.Type][]route{},
		topics:  map[string]*topicSubs{},
		settled: make(chan struct{}, 1),
	}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	b.log = b.log.Named("fxbus")
	if b.cfg.Marshaler == nil {
		b.cfg.Marshaler = JSON{}
	}
	var errs []error
	for _, r := range routes {
		errs = append(errs, r.err)
	}
	for _, s := range subs {
		errs = append(errs, s.err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Publisher == nil && cfg.Subscriber == nil && (len(routes) > 0 || len(subs) > 0) {
		b.owned = acquireEmbedded()
		b.cfg.Publisher, b.cfg.Subscriber = b.owned, b.owned
		b.log.Warn("no Watermill publisher or subscriber: using the process's in-process broker, which is not durable " +
			"and reaches no other process; supply a message.Publisher and message.Subscriber for a real broker")
	}
	if len(routes) > 0 && b.cfg.Publisher == nil {
		errs = append(errs, fmt.Errorf("fxbus: %d routes (the first to %q) but no message.Publisher", len(routes), routes[0].r.topic))
	}
	if len(subs) > 0 && b.cfg.Subscriber == nil {
		errs = append(errs, fmt.Errorf("fxbus: %d subscriptions (the first to %q) but no message.Subscriber", len(subs), subs[0].s.topic))
	}
	if len(subs) > 0 && b.cfg.Publisher == nil {
		errs = append(errs, errors.New("fxbus: subscriptions need a message.Publisher too, for their dead letters"))
	}
	if _, old := cfg.DeadLetters.(keyOnlyParking); old {
		errs = append(errs, fmt.Errorf("fxbus: Config.DeadLetters (%T) has ParkedKeys returning []string, the Parking of before keys were parked per tenant: return []fxbus.ParkedKey (Tenant, Key) to keep parking keys; as it is, nothing would park a key", cfg.DeadLetters))
	}
	errs = append(errs, b.addRoutes(routes)...)
	errs = append(errs, b.addSubscriptions(subs)...)
	errs = append(errs, b.checkNames(routes, subs)...)
	errs = append(errs, b.addVersions(routes, subs, cfg.Upcasters)...)
	b.declared = declaredTopics(routes, subs)
	errs = append(errs, b.checkTopics(b.declared)...)
	if err := errors.Join(errs...); err != nil {
		if b.owned != nil {
			_ = b.owned.Close()
		}
		return nil, err
	}
	return b, nil
}

func (b *Bus) addRoutes(routes []Routing) []error {
	var errs []error
	for _, rt := range routes {
		r := rt.r
		if slices.ContainsFunc(b.routes[r.typ], func(o route) bool { return o.topic == r.topic }) {
			errs = append(errs, fmt.Errorf("fxbus: two routes of %s to %q", r.typ, r.topic))
			continue
		}
		b.routes[r.typ] = append(b.routes[r.typ], r)
		if r.typ.Kind() == reflect.Interface {
			b.ifaces = append(b.ifaces, r)
		}
	}
	// Interfaces in a fixed order, whatever order fx gave the routes in.
	sort.SliceStable(b.ifaces, func(i, j int) bool {
		return b.ifaces[i].typ.String()+b.ifaces[i].topic < b.ifaces[j].typ.String()+b.ifaces[j].topic
	})
	return errs
}

func (b *Bus) addSubscriptions(subs []Subscription) []error {
	var errs []error
	for _, sub := range subs {
		s := sub.s
		ts := b.topics[s.topic]
		if ts == nil {
			ts = &topicSubs{topic: s.topic, byName: map[string]*subscription{}, retry: s.retry, dead: s.deadLetter, limit: s.inFlight, inOrder: s.inOrder, fair: s.fair, lookahead: s.lookahead}
			b.topics[s.topic] = ts
		}
		if ts.retry != s.retry || ts.dead != s.deadLetter || ts.limit != s.inFlight || ts.inOrder != s.inOrder {
			errs = append(errs, fmt.Errorf("fxbus: the subscriptions of %q disagree on their retry policy, dead letter topic, messages in flight or InOrder: one Watermill handler consumes a topic", s.topic))
		}
		if ts.fair != s.fair || ts.lookahead != s.lookahead {
			errs = append(errs, fmt.Errorf("fxbus: the subscriptions of %q disagree on FairShares or Lookahead: one Watermill handler consumes a topic", s.topic))
		}
		ts.limited = ts.limited || s.limited
		name := s.name
		if name == "" {
			name = defaultName(s.typ)
		}
		if prev, ok := ts.byName[name]; ok {
			errs = append(errs, fmt.Errorf("fxbus: two subscriptions to %q for the event name %q: %s and %s", s.topic, name, prev.typ, s.typ))
			continue
		}
		ts.byName[name] = &s
	}
	for _, ts := range b.topics {
		if len(ts.byName) == 1 {
			for _, s := range ts.byName {
				ts.only = s
			}
		}
	}
	return errs
}

// checkNames fixes each concrete type's name on the wire and refuses two
// types with one name, or one type with two.
func (b *Bus) checkNames(routes []Routing, subs []Subscription) []error {
	var errs []error
	named := func(t reflect.Type, name string) {
		if t.Kind() == reflect.Interface {
			return
		}
		if name == "" {
			if _, ok := b.names[t]; ok {
				return
			}
			name = defaultName(t)
		} else if prev, ok := b.names[t]; ok && prev != name && prev != defaultName(t) {
			errs = append(errs, fmt.Errorf("fxbus: %s is named both %q and %q", t, prev, name))
			return
		}
		b.names[t] = name
	}
	for _, r := range routes {
		named(r.r.typ, r.r.name)
	}
	for _, s := range subs {
		named(s.s.typ, s.s.name)
	}
	byName := map[string]reflect.Type{}
	for t, name := range b.names {
		if other, ok := byName[name]; ok && other != t {
			a, c := t.String(), other.String()
			if a > c {
				a, c = c, a
			}
			errs = append(errs, fmt.Errorf("fxbus: %s and %s have the same name on the wire, %q: rename one with fxbus.Name", a, c, name))
			continue
		}
		byName[name] = t
	}
	return errs
}

// nameOf is an event type's name on the wire.
func (b *Bus) nameOf(t reflect.Type) string {
	if name, ok := b.names[t]; ok {
		return name
	}
	return defaultName(t)
}

// checker is a publisher or subscriber that can say whether its broker is
// reachable (natsjs's PubSub can).
type checker interface {
	Check(ctx context.Context) error
}

// Checks are the bus's health checks (fxbus.Module registers them for
// fxcqrs.HealthModule): fxbus.broker, readiness, when the publisher or the
// subscriber can say whether its broker is reachable (natsjs can: an
// in-memory look at its connection). A bus on a broker that cannot say
// has none.
func (b *Bus) Checks() []fxcqrs.Check {
	var cs []checker
	for _, c := range []any{b.cfg.Publisher, b.cfg.Subscriber} {
		if c, ok := c.(checker); ok && !slices.ContainsFunc(cs, func(o checker) bool { return same(any(o), any(c)) }) {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return nil
	}
	return []fxcqrs.Check{{Name: "fxbus.broker", Readiness: true, Run: func(ctx context.Context) error {
		var errs []error
		for _, c := range cs {
			errs = append(errs, c.Check(ctx))
		}
		return errors.Join(errs...)
	}}}
}

// Subscribed returns the topics the bus's subscriptions consume, sorted.
func (b *Bus) Subscribed() []string {
	topics := make([]string, 0, len(b.topics))
	for t := range b.topics {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	return topics
}
