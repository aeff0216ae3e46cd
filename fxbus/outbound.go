package fxbus

import (
	"context"
	"fmt"
	"reflect"
	"slices"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/zap"
)

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

// Forwards reports whether events of type t are routed: the mediator hands
// those to Forward.
func (b *Bus) Forwards(t reflect.Type) bool { return len(b.routesOf(t)) > 0 }

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
		exp   = expiryOf(ctx)
	)
	for at, ev := range events {
		t := reflect.TypeOf(ev)
		rs := b.routesOf(t)
		if len(rs) == 0 {
			continue
		}
		if out == nil {
			// Room for this event's messages and one for each event after
			// it: one allocation where appending grew the slice per power
			// of two.
			out = make([]Outgoing, 0, len(rs)+len(events)-at-1)
		}
		msg, err := newMessage(ctx, b.marshalerOf(rs[0]), b.nameOf(t), b.VersionOf(t), ev)
		if err == nil {
			b.inject(b.createRouted(ctx, msg, rs), msg)
		}
		for i, r := range rs {
			if err != nil {
				fails = append(fails, PublishFailure{Topic: r.topic, Event: ev, Err: fmt.Errorf("marshal %s: %w", t, err)})
				continue
			}
			m := msg
			if i > 0 || (r.ce != nil && len(rs) > 1) {
				m = msg.Copy() // a publisher may keep or change what it was given; a CloudEvent is one route's
			}
			if mr := b.marshalerOf(r); i > 0 && mr.ContentType() != b.marshalerOf(rs[0]).ContentType() {
				if err := remarshal(mr, m, ev); err != nil {
					fails = append(fails, PublishFailure{Topic: r.topic, Event: ev, Err: fmt.Errorf("marshal %s: %w", t, err)})
					continue
				}
			}
			if key := r.keyOf(ev); key != "" {
				m.Metadata.Set(MetadataKey, key)
			} else if i > 0 {
				delete(m.Metadata, MetadataKey) // the first route's key is not this one's
			}
			if by := b.deliverBy(&exp, ev, r.within); !by.IsZero() || i > 0 {
				stampDeliverBy(m, by)
			}
			if r.ce != nil {
				b.toCloudEvent(r.ce, m, ev)
			}
			out = append(out, Outgoing{Topic: r.topic, Message: m, Event: ev})
		}
	}
	return out, fails
}

// createRouted is create for a message of routes rs: their topics are
// gathered only for a Tracer, so that without one a routed event costs
// nothing more.
func (b *Bus) createRouted(ctx context.Context, msg *message.Message, rs []route) context.Context {
	if b.cfg.Tracer == nil {
		return ctx
	}
	return b.cfg.Tracer.Create(ctx, msg, topicsOf(rs))
}

func topicsOf(rs []route) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.topic
	}
	return out
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
		end := b.Send(ctx, topic, msgs)
		err := b.cfg.Publisher.Publish(topic, msgs...)
		end(err)
		if err != nil {
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

// Publisher returns the publisher for a relay to deliver through (the
// outbox module's): the bus's own, or, on the in-process broker, one that
// refuses a topic nothing in the process subscribes to, since the
// in-process broker keeps nothing and a relay deletes what it published.
func (b *Bus) Publisher() message.Publisher {
	if b.owned != nil {
		return delivering{b.owned}
	}
	return b.cfg.Publisher
}

// BatchPublisher is a publisher that sends a batch of one topic's messages
// without waiting on each and says how far the broker took them. The
// outbox module's relay uses it when the bus's publisher has it (natsjs
// does: JetStream's asynchronous publish); every other message.Publisher
// is published to one message at a time, as Watermill's Publish reports
// one error for all it was given.
type BatchPublisher interface {
	// PublishBatch publishes msgs to topic, in order, and returns how
	// many of them, from the first, the broker acknowledged, with the
	// error of the first it did not when that is not all of them.
	PublishBatch(topic string, msgs []*message.Message) (acked int, err error)
}
