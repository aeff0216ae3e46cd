package natsjs

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// The group's durable consumer on a topic's stream: a pull consumer, from
// which each subscription fetches no more than its InFlight.

// consumerConfig is the shape of the group's consumer: pulled, explicit
// acknowledgements, reading from start (0: the stream's first message)
// in stream order.
func (p *PubSub) consumerConfig(start uint64) *nats.ConsumerConfig {
	cfg := &nats.ConsumerConfig{
		Durable:       p.cfg.Group,
		DeliverPolicy: nats.DeliverAllPolicy,
		AckPolicy:     nats.AckExplicitPolicy,
		AckWait:       p.cfg.AckWait,
		MaxDeliver:    p.cfg.MaxDeliver,
	}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = nats.DeliverByStartSequencePolicy, start
	}
	return cfg
}

// ensureConsumer makes the group's consumer on topic's stream, or moves
// the one there to the shape this package consumes with:
//   - none: one is made, reading the stream from its start;
//   - a push consumer (DeliverSubject set, made by natsjs before 0.x):
//     remade as a pull consumer from its ack floor + 1, so that every
//     message it had not acknowledged is delivered again, in stream order;
//   - a pull consumer with messages delivered and not acknowledged while
//     no other process consumes from it (none pulls, none answers on the
//     presence subject: the process that held them was killed or
//     stopped): remade from its ack floor + 1 the same way, so that the
//     dead process's messages come back before the newer ones of their
//     keys. What it had handled after the floor comes back too: the inbox
//     skips it.
//
// Remade reports whether the consumer was remade from its ack floor.
func (p *PubSub) ensureConsumer(topic string) (remade bool, err error) {
	stream, group := streamName(topic), p.cfg.Group
	info, err := p.js.ConsumerInfo(stream, group)
	switch {
	case errors.Is(err, nats.ErrConsumerNotFound):
		if _, err := p.js.AddConsumer(stream, p.consumerConfig(0)); err != nil && !errors.Is(err, nats.ErrConsumerNameAlreadyInUse) {
			return false, fmt.Errorf("natsjs: make consumer %s on %s: %w", group, stream, err)
		}
		return false, nil
	case err != nil:
		return false, fmt.Errorf("natsjs: consumer %s on %s: %w", group, stream, err)
	case info.Config.DeliverSubject != "":
		return true, p.remake(stream, info, "it is a push consumer, made before natsjs pulled")
	case info.NumAckPending > 0 && info.NumWaiting == 0 && !p.othersConsume(topic):
		return true, p.remake(stream, info, "it has messages delivered and not acknowledged, and no process consumes from it")
	}
	return false, nil
}

// presenceSubject is where every subscription of group on topic answers,
// for as long as it holds messages: a starting subscription asks it
// before it remakes the consumer, so as never to remake it under a live
// process (one whose InFlight is reached pulls nothing, and JetStream
// cannot tell it from a dead one).
func presenceSubject(topic, group string) string {
	return "_NATSJS.consuming." + streamName(topic) + "." + group
}

// othersConsume reports whether a subscription of the group on topic
// answers on its presence subject; no answer within a second counts as
// one, so that a slow process is not taken for a dead one.
func (p *PubSub) othersConsume(topic string) bool {
	_, err := p.conn.Request(presenceSubject(topic, p.cfg.Group), nil, time.Second)
	return !errors.Is(err, nats.ErrNoResponders)
}

// remake deletes the consumer info describes and makes it again, in the
// pulled shape, from its ack floor + 1: every message it had not
// acknowledged is delivered again, in stream order, before newer ones.
func (p *PubSub) remake(stream string, info *nats.ConsumerInfo, why string) error {
	floor := info.AckFloor.Stream
	if err := p.js.DeleteConsumer(stream, info.Name); err != nil && !errors.Is(err, nats.ErrConsumerNotFound) {
		return fmt.Errorf("natsjs: remake consumer %s on %s (%s): delete: %w", info.Name, stream, why, err)
	}
	if _, err := p.js.AddConsumer(stream, p.consumerConfig(floor+1)); err != nil && !errors.Is(err, nats.ErrConsumerNameAlreadyInUse) {
		return fmt.Errorf("natsjs: remake consumer %s on %s from stream sequence %d (%s): %w", info.Name, stream, floor+1, why, err)
	}
	return nil
}
