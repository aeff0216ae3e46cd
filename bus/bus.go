package fxbus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/zap"
)

// Config is what a Bus is made of. Every field is optional.
type Config struct {
	// Publisher publishes routed events and dead letters: any Watermill
	// publisher (NATS JetStream, RabbitMQ, Kafka, Redis Streams, SQL).
	// Required when there are routes or subscriptions, unless Subscriber
	// is nil too: then both are an in-process GoChannel.
	Publisher message.Publisher
	// Subscriber consumes the subscribed topics. Required when there are
	// subscriptions, with the same exception.
	Subscriber message.Subscriber
	// Logger logs, Watermill's router included. Default: none.
	Logger *zap.Logger
	// Marshaler encodes events. Default: JSON.
	Marshaler Marshaler
	// Outbox says that the outbox module writes routed events to its
	// table, in the handler's transaction, and its relay publishes them:
	// the bus then forwards nothing itself. The outbox module sets it.
	Outbox bool
}

// Bus takes routed events out of the process and brings subscribed ones
// in. It is the fxcqrs.Forwarder of its mediator. Under fx, [Module] makes
// one; without fx, make one with [New], pass it to fxcqrs.WithForwarder,
// then Start it with the mediator.
type Bus struct {
	cfg    Config
	log    *zap.Logger
	owned  *gochannel.GoChannel // the default publisher and subscriber, closed by Stop
	names  map[reflect.Type]string
	routes map[reflect.Type][]route // by exact type, interfaces included
	ifaces []route                  // routes of interface types
	topics map[string]*topicSubs    // subscriptions by topic

	resolved sync.Map // reflect.Type → []route: every route an event type matches

	mu      sync.Mutex
	router  *message.Router
	stopped chan struct{} // closed when the router's Run returned
}

// topicSubs is the subscriptions of one topic: one Watermill handler.
type topicSubs struct {
	topic  string
	byName map[string]*subscription
	only   *subscription // the topic's one subscription, if it has one
	retry  RetryPolicy
	dead   string
}

var _ fxcqrs.Forwarder = (*Bus)(nil)

// New returns a bus with the given routes and subscriptions. It reports
// every problem at once: a route without a publisher, a subscription
// without a subscriber, two routes of one type to one topic, two types
// with one name on the wire.
func New(cfg Config, routes []Routing, subs []Subscription) (*Bus, error) {
	b := &Bus{
		cfg:    cfg,
		log:    cfg.Logger,
		names:  map[reflect.Type]string{},
		routes: map[reflect.Type][]route{},
		topics: map[string]*topicSubs{},
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
		// Behind an outbox, a message published before its subscriber
		// subscribed must not vanish while its row is deleted as sent:
		// the GoChannel keeps messages for late subscribers and waits for
		// an acknowledgement.
		b.owned = gochannel.NewGoChannel(gochannel.Config{
			OutputChannelBuffer:            64,
			Persistent:                     cfg.Outbox,
			BlockPublishUntilSubscriberAck: cfg.Outbox,
		}, newLogger(b.log))
		b.cfg.Publisher, b.cfg.Subscriber = b.owned, b.owned
		b.log.Warn("no Watermill publisher or subscriber: using an in-process GoChannel, which is not durable " +
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
	errs = append(errs, b.addRoutes(routes)...)
	errs = append(errs, b.addSubscriptions(subs)...)
	errs = append(errs, b.checkNames(routes, subs)...)
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
			ts = &topicSubs{topic: s.topic, byName: map[string]*subscription{}, retry: s.retry, dead: s.deadLetter}
			b.topics[s.topic] = ts
		}
		if ts.retry != s.retry || ts.dead != s.deadLetter {
			errs = append(errs, fmt.Errorf("fxbus: the subscriptions of %q disagree on their retry policy or dead letter topic: one Watermill handler consumes a topic", s.topic))
		}
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

// routesOf returns every route events of type t take, each topic once.
func (b *Bus) routesOf(t reflect.Type) []route {
	if rs, ok := b.resolved.Load(t); ok {
		return rs.([]route)
	}
	var rs []route
	add := func(r route) {
		if !slices.ContainsFunc(rs, func(o route) bool { return o.topic == r.topic }) {
			rs = append(rs, r)
		}
	}
	for _, r := range b.routes[t] {
		add(r)
	}
	for _, r := range b.ifaces {
		if t != r.typ && t.Implements(r.typ) {
			add(r)
		}
	}
	actual, _ := b.resolved.LoadOrStore(t, rs)
	return actual.([]route)
}

// Forwards reports whether events of type t are routed and the bus
// publishes them itself (not with an outbox).
func (b *Bus) Forwards(t reflect.Type) bool { return !b.cfg.Outbox && len(b.routesOf(t)) > 0 }

// Routes reports whether events of type t are routed at all.
func (b *Bus) Routes(t reflect.Type) bool { return len(b.routesOf(t)) > 0 }

// Outgoing is a routed event made into a message for one topic.
type Outgoing struct {
	// Topic is the route's topic.
	Topic string
	// Message is the event on the wire: payload, name, ids.
	Message *message.Message
	// Event is the event itself.
	Event any
}

// Messages makes the routed events among events into messages, in emit
// order: one message per event, sent to each of its routes' topics (the
// copies share the message id). It publishes nothing: the outbox module
// writes them to its table instead. An event that cannot be marshaled is a
// PublishFailure.
func (b *Bus) Messages(ctx context.Context, events []any) ([]Outgoing, []PublishFailure) {
	var (
		out   []Outgoing
		fails []PublishFailure
	)
	for _, ev := range events {
		t := reflect.TypeOf(ev)
		rs := b.routesOf(t)
		if len(rs) == 0 {
			continue
		}
		msg, err := newMessage(ctx, b.cfg.Marshaler, b.nameOf(t), ev)
		for i, r := range rs {
			if err != nil {
				fails = append(fails, PublishFailure{Topic: r.topic, Event: ev, Err: fmt.Errorf("marshal %s: %w", t, err)})
				continue
			}
			m := msg
			if i > 0 {
				m = msg.Copy() // a publisher may keep or change what it was given
			}
			out = append(out, Outgoing{Topic: r.topic, Message: m, Event: ev})
		}
	}
	return out, fails
}

// Forward publishes events to their routes' topics, each topic's messages
// in emit order, in one Publish call per topic. Failures are returned as a
// *PublishError; the events that could be published are.
func (b *Bus) Forward(ctx context.Context, events []any) error {
	out, fails := b.Messages(ctx, events)
	var topics []string
	byTopic := map[string][]Outgoing{}
	for _, o := range out {
		if _, ok := byTopic[o.Topic]; !ok {
			topics = append(topics, o.Topic)
		}
		byTopic[o.Topic] = append(byTopic[o.Topic], o)
	}
	for _, topic := range topics {
		batch := byTopic[topic]
		msgs := make([]*message.Message, len(batch))
		for i, o := range batch {
			msgs[i] = o.Message
		}
		if err := b.cfg.Publisher.Publish(topic, msgs...); err != nil {
			for _, o := range batch {
				fails = append(fails, PublishFailure{Topic: topic, Event: o.Event, Err: err})
			}
			b.log.Error("routed events not published", zap.String("topic", topic), zap.Int("events", len(batch)), zap.Error(err))
		}
	}
	if len(fails) > 0 {
		return &PublishError{Failures: fails}
	}
	return nil
}

// Publisher returns the publisher the bus publishes with, the in-process
// GoChannel included: the outbox module's relay delivers through it.
func (b *Bus) Publisher() message.Publisher { return b.cfg.Publisher }

// Start runs the subscriptions, processing their messages with m, and
// returns once they run. A bus without subscriptions starts nothing.
func (b *Bus) Start(ctx context.Context, m *fxcqrs.Mediator) error {
	if m == nil {
		return errors.New("fxbus: Start: nil *fxcqrs.Mediator")
	}
	if len(b.topics) == 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.router != nil {
		return errors.New("fxbus: Start: already started")
	}
	router, err := message.NewRouter(message.RouterConfig{}, newLogger(b.log))
	if err != nil {
		return err
	}
	topics := make([]string, 0, len(b.topics))
	for topic := range b.topics {
		topics = append(topics, topic)
	}
	sort.Strings(topics)
	for _, topic := range topics {
		ts := b.topics[topic]
		poison, err := middleware.PoisonQueueWithFilter(b.cfg.Publisher, ts.dead, func(err error) bool {
			return !errors.As(err, new(*redeliver))
		})
		if err != nil {
			return err
		}
		retry := middleware.Retry{
			MaxRetries:          ts.retry.MaxRetries,
			InitialInterval:     ts.retry.InitialInterval,
			MaxInterval:         ts.retry.MaxInterval,
			Multiplier:          2,
			RandomizationFactor: 0.2,
			ShouldRetry: func(p middleware.RetryParams) bool {
				return !errors.As(p.Err, new(*malformed)) && !errors.As(p.Err, new(*redeliver))
			},
			ResetContextOnRetry: true,
			Logger:              newLogger(b.log),
		}
		h := router.AddConsumerHandler("fxbus "+topic, topic, b.cfg.Subscriber, b.handler(ts, m))
		h.AddMiddleware(poison, retry.Middleware)
	}
	b.router = router
	b.stopped = make(chan struct{})
	go func() {
		defer close(b.stopped)
		if err := router.Run(context.Background()); err != nil {
			b.log.Error("router stopped", zap.Error(err))
		}
	}()
	select {
	case <-router.Running():
		return nil
	case <-b.stopped:
		return errors.New("fxbus: the router stopped before it ran")
	case <-ctx.Done():
		_ = router.Close()
		return fmt.Errorf("fxbus: Start: %w", ctx.Err())
	}
}

// Stop stops consuming: it waits, until ctx ends, for the messages being
// processed to finish, then returns. A message whose processing had not
// finished is not acknowledged: the broker redelivers it. Stop closes the
// in-process GoChannel the bus made, never a publisher or subscriber it
// was given.
func (b *Bus) Stop(ctx context.Context) error {
	b.mu.Lock()
	router, stopped := b.router, b.stopped
	b.mu.Unlock()
	var err error
	if router != nil {
		closed := make(chan error, 1)
		go func() { closed <- router.Close() }()
		select {
		case err = <-closed:
			<-stopped
		case <-ctx.Done():
			err = fmt.Errorf("fxbus: Stop: messages still in flight: %w", ctx.Err())
		}
	}
	if b.owned != nil {
		err = errors.Join(err, b.owned.Close())
	}
	return err
}

// malformed marks a message that cannot be decoded: it goes to the dead
// letter at once.
type malformed struct{ err error }

func (e *malformed) Error() string { return "malformed message: " + e.err.Error() }
func (e *malformed) Unwrap() error { return e.err }

// redeliver marks a message that was not processed because the mediator
// is stopping or its context ended: it is nacked for redelivery, neither
// retried here nor dead-lettered.
type redeliver struct{ err error }

func (e *redeliver) Error() string { return "not processed, to be redelivered: " + e.err.Error() }
func (e *redeliver) Unwrap() error { return e.err }

// handler processes one topic's messages.
func (b *Bus) handler(ts *topicSubs, m *fxcqrs.Mediator) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		name := msg.Metadata.Get(MetadataName)
		s := ts.byName[name]
		if s == nil {
			switch {
			case name == "" && ts.only != nil:
				s = ts.only
			case name == "":
				return &malformed{err: fmt.Errorf("no %q metadata, and topic %q carries several event types", MetadataName, ts.topic)}
			default:
				b.log.Debug("message skipped: no subscription for its event name",
					zap.String("topic", ts.topic), zap.String("name", name), zap.String("id", msg.UUID))
				return nil
			}
		}
		event, err := s.decode(b.cfg.Marshaler, msg.Payload)
		if err != nil {
			return &malformed{err: fmt.Errorf("decode %s: %w", s.typ, err)}
		}
		ctx := fxcqrs.Foreground(withInbound(msg.Context(), msg))
		err = s.publish(ctx, m, event)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, fxcqrs.ErrStopped), ctx.Err() != nil:
			return &redeliver{err: err}
		}
		return err
	}
}
