package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// topicRule is CheckTopic's rule, in words, for errors and docs.
const topicRule = "a NATS subject without wildcards: dot-separated tokens, none empty, " +
	"without space, *, >, / or \\ (each dot becomes _ in the topic's stream name, " +
	"so two topics that differ only there cannot both be used)"

// streamName is the name of topic's stream: the topic, its dots made
// underscores (a subject may hold dots, a stream's name may not). The
// stream takes the topic itself as its one subject.
func streamName(topic string) string { return strings.ReplaceAll(topic, ".", "_") }

// CheckTopic returns an error naming topic and the rule when JetStream
// cannot take it: topic is the subject, its stream is named after it with
// each dot made an underscore. A topic whose stream name another topic of
// this PubSub already maps to ("a.b" after "a_b") is refused too.
func (p *PubSub) CheckTopic(topic string) error {
	if err := checkSubject(topic); err != nil {
		return fmt.Errorf("natsjs: topic %q: %w; the rule: %s", topic, err, topicRule)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	name := streamName(topic)
	if other, ok := p.streams[name]; ok && other != topic {
		return fmt.Errorf("natsjs: topics %q and %q would share the stream %s; the rule: %s", other, topic, name, topicRule)
	}
	p.streams[name] = topic
	return nil
}

func checkSubject(topic string) error {
	switch {
	case topic == "":
		return errors.New("it is empty")
	case len(topic) > 255:
		return errors.New("it is longer than 255 bytes")
	case strings.ContainsAny(topic, "*>/\\"):
		return errors.New("it holds a wildcard (*, >) or a path separator (/, \\)")
	case strings.IndexFunc(topic, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return errors.New("it holds a space or a control character")
	case slices.Contains(strings.Split(topic, "."), ""):
		return errors.New("it has an empty token (a leading, trailing or double dot)")
	}
	return nil
}

// Provision makes each topic's stream, unless the server has it: a stream
// named after the topic (see CheckTopic) with the topic as its subject.
// A stream of that name that another process made counts when it takes
// the topic; one that takes other subjects is an error. Publish refuses a
// topic nobody provisioned; the bus provisions every topic its routes,
// subscriptions and dead letters declare when it starts. The group's
// durable consumer is made when a subscription starts (it reads the
// stream from its first message, so nothing published before is missed):
// a service that only publishes to a topic leaves no idle consumer on it.
func (p *PubSub) Provision(ctx context.Context, topics ...string) error {
	for _, topic := range topics {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("natsjs: Provision: %w", err)
		}
		if err := p.CheckTopic(topic); err != nil {
			return err
		}
		if err := p.ensureStream(ctx, topic, true); err != nil {
			return err
		}
	}
	return nil
}

// provisioned reports, from the cache or else the server, whether topic
// has its stream; Publish asks it before it sends.
func (p *PubSub) provisioned(topic string) error {
	p.mu.Lock()
	_, ok := p.ready[topic]
	p.mu.Unlock()
	if ok {
		return nil
	}
	if err := p.CheckTopic(topic); err != nil {
		return err
	}
	return p.ensureStream(context.Background(), topic, false)
}

// subjects is the subjects topic's stream takes: had, and the topic's,
// and its lanes' when it has more than one.
func (p *PubSub) subjects(topic string, had []string) []string {
	out := slices.Clone(had)
	if !slices.Contains(out, topic) {
		out = append(out, topic)
	}
	if p.lanesOf(topic) > 1 && !slices.Contains(out, laneWildcard(topic)) {
		out = append(out, laneWildcard(topic))
	}
	return out
}

// ensureStream checks that topic's stream exists and takes topic, and
// makes it when create is set; on success the answer is cached.
func (p *PubSub) ensureStream(ctx context.Context, topic string, create bool) error {
	name := streamName(topic)
	info, err := p.js.StreamInfo(name, nats.Context(ctx))
	switch {
	case errors.Is(err, nats.ErrStreamNotFound) && create:
		info, err = p.js.AddStream(&nats.StreamConfig{Name: name, Subjects: p.subjects(topic, nil)}, nats.Context(ctx))
		if errors.Is(err, nats.ErrStreamNameAlreadyInUse) {
			info, err = p.js.StreamInfo(name, nats.Context(ctx))
		}
	case errors.Is(err, nats.ErrStreamNotFound):
		return fmt.Errorf("natsjs: publish to %s: the topic is not provisioned (JetStream has no stream %s): declare it with fxbus.Route or fxbus.Subscribe, or call Provision", topic, name)
	}
	if err != nil {
		return fmt.Errorf("natsjs: stream %s of topic %s: %w", name, topic, err)
	}
	if !slices.Contains(info.Config.Subjects, topic) {
		return fmt.Errorf("natsjs: stream %s exists and does not take topic %s (its subjects: %s)", name, topic, strings.Join(info.Config.Subjects, ", "))
	}
	if want := p.subjects(topic, info.Config.Subjects); len(want) != len(info.Config.Subjects) {
		// A stream made before the topic had lanes takes its lanes' subjects too.
		cfg := info.Config
		cfg.Subjects = want
		if _, err := p.js.UpdateStream(&cfg, nats.Context(ctx)); err != nil {
			return fmt.Errorf("natsjs: stream %s of topic %s: add its lanes' subjects: %w", name, topic, err)
		}
	}
	if err := p.checkRecordedLanes(topic); err != nil {
		return err
	}
	p.mu.Lock()
	p.ready[topic] = struct{}{}
	p.mu.Unlock()
	return nil
}
