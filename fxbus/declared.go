package fxbus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// This file holds what the bus asks of its broker about the topics it
// declares (see broker.go): that it takes their names, when the bus is
// made, and that it makes them, when the bus starts.

// declared is a topic the bus declares, with what declared it.
type declared struct {
	topic string
	by    string // "the route of T", "the subscription of T", "the dead letter of the subscriptions to t"
	// consumed says the bus consumes the topic or keeps what it sends
	// there (a subscription's, a dead letter's), not only publishes to it.
	consumed bool
}

// declaredTopics returns every topic the routes, subscriptions and dead
// letters declare, each with its first declarer, in a fixed order.
func declaredTopics(routes []Routing, subs []Subscription) []declared {
	var out []declared
	at := map[string]int{}
	add := func(topic, by string, consumed bool) {
		if topic == "" {
			return
		}
		if i, ok := at[topic]; ok {
			out[i].consumed = out[i].consumed || consumed
			return
		}
		at[topic] = len(out)
		out = append(out, declared{topic: topic, by: by, consumed: consumed})
	}
	for _, r := range routes {
		add(r.r.topic, fmt.Sprintf("the route of %s", r.r.typ), false)
	}
	for _, s := range subs {
		add(s.s.topic, fmt.Sprintf("the subscription of %s", s.s.typ), true)
	}
	for _, s := range subs {
		add(s.s.deadLetter, fmt.Sprintf("the dead letter of the subscription of %s to %q", s.s.typ, s.s.topic), true)
	}
	return out
}

// brokersOf returns the distinct values among the publisher and the
// subscriber that implement I.
func brokersOf[I any](pub, sub any) []I {
	var out []I
	for _, v := range []any{pub, sub} {
		if i, ok := v.(I); ok && !slices.ContainsFunc(out, func(o I) bool { return same(any(o), v) }) {
			out = append(out, i)
		}
	}
	return out
}

// same reports whether a and b are one value; a value of a type that
// cannot be compared (a struct holding a map, say) is only itself.
func same(a, b any) bool {
	if t := reflect.TypeOf(a); t == nil || !t.Comparable() || t != reflect.TypeOf(b) {
		return false
	}
	return a == b
}

// checkTopics checks every declared topic with the publisher's and the
// subscriber's CheckTopic (when they are a Broker): one error per topic
// and broker that refuses it, naming the topic, its declarer and the rule.
func (b *Bus) checkTopics(topics []declared) []error {
	var errs []error
	for _, br := range brokersOf[Broker](b.cfg.Publisher, b.cfg.Subscriber) {
		caps := br.Capabilities()
		for _, d := range topics {
			err := br.CheckTopic(d.topic)
			if err == nil {
				continue
			}
			rule := ""
			if caps.TopicRule != "" && !strings.Contains(err.Error(), caps.TopicRule) {
				rule = " (its topics: " + caps.TopicRule + ")"
			}
			errs = append(errs, fmt.Errorf("fxbus: %s declares the topic %q, which %s does not take%s: %w", d.by, d.topic, brokerName(caps), rule, err))
		}
	}
	return errs
}

func brokerName(caps Capabilities) string {
	if caps.Name == "" {
		return "the broker"
	}
	return caps.Name
}

// Provision makes every topic the bus declares (its routes',
// subscriptions' and dead letters') on the publisher and the subscriber
// that are a [Provisioner], each once, and remembers that it did: it is
// done once per bus. [Module] calls it when the application starts,
// before any module that publishes through the bus (the outbox's relay)
// starts; [Bus.Start] calls it too, before it consumes, so that a bus
// made with [New] needs nothing more. A bus whose broker provisions
// nothing does nothing here.
func (b *Bus) Provision(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.provisionLocked(ctx)
}

func (b *Bus) provisionLocked(ctx context.Context) error {
	if b.provisioned {
		return nil
	}
	var topics, published, consumed []string
	for _, d := range b.declared {
		topics = append(topics, d.topic)
		if d.consumed {
			consumed = append(consumed, d.topic)
		} else {
			published = append(published, d.topic)
		}
	}
	if len(topics) == 0 {
		b.provisioned = true
		return nil
	}
	var errs []error
	for _, p := range brokersOf[Provisioner](b.cfg.Publisher, b.cfg.Subscriber) {
		cp, ok := p.(ConsumerProvisioner)
		if !ok {
			errs = append(errs, p.Provision(ctx, topics...))
			continue
		}
		if len(published) > 0 {
			errs = append(errs, p.Provision(ctx, published...))
		}
		if len(consumed) > 0 {
			errs = append(errs, cp.ProvisionConsumer(ctx, consumed...))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fxbus: provision the topics %s: %w", strings.Join(topics, ", "), err)
	}
	b.provisioned = true
	return nil
}

// sortedTopics returns the subscribed topics in order.
func (b *Bus) sortedTopics() []string { return slices.Sorted(maps.Keys(b.topics)) }
