package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// A subscription with InOrder on a topic of more than one lane: the
// group's replicas share the lanes, each lane consumed by one replica at
// a time through a durable consumer of its own.

// laneSet is one such subscription: an ownership.Driver over the lanes,
// each a subscription of its own on the lane's consumer, all handing over
// to one channel.
type laneSet struct {
	stopC chan struct{}
	once  sync.Once
	ended chan struct{}
}

// laneConsumer is the durable consumer of group's lane n.
func laneConsumer(group string, n int) string { return group + "_lane" + strconv.Itoa(n) }

// subscribeLanes starts a lane set on topic: the replica joins its group's
// members and consumes the lanes it comes to own.
func (p *PubSub) subscribeLanes(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	kv, err := p.bucket(ownershipBucket)
	if err != nil {
		return nil, err
	}
	lanes := p.lanesOf(topic)
	co, err := ownership.New(&laneStore{kv: kv, prefix: streamName(topic) + "." + p.cfg.Group + "."},
		ownership.Config{Member: ownership.MemberOr(p.cfg.Member), Lanes: lanes, Lease: p.cfg.Lease})
	if err != nil {
		return nil, fmt.Errorf("natsjs: the lanes of %s: %w", topic, err)
	}
	flow.InFlight = max(1, flow.InFlight/lanes)
	out := make(chan *message.Message)
	ls := &laneSet{stopC: make(chan struct{}), ended: make(chan struct{})}
	d := ownership.NewDriver(co, ownership.DriverConfig{
		Warn: p.laneWarn(topic), Out: out, Stop: ls.stopC,
		Flush: func() { _ = p.conn.FlushTimeout(time.Second) }, // what was given back reaches the server first
		Start: func(lease fxbus.LaneLease) (ownership.Lane, error) {
			return p.startLane(ctx, topic, flow, out, lease)
		},
	})
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("natsjs: closed")
	}
	p.sets[ls] = struct{}{}
	p.mu.Unlock()
	go func() {
		defer close(ls.ended)
		defer func() {
			p.mu.Lock()
			delete(p.sets, ls)
			p.mu.Unlock()
		}()
		d.Run(ctx)
	}()
	return out, nil
}

// stop ends the set: its lanes are drained and given back.
func (ls *laneSet) stop() { ls.once.Do(func() { close(ls.stopC) }) }

// startLane consumes the lane of lease: the lane's consumer is remade
// from its ack floor + 1, so that what its previous owner held and had
// not acknowledged comes first, in stream order, and so that the previous
// owner, if it only stalled, can acknowledge nothing more.
func (p *PubSub) startLane(ctx context.Context, topic string, flow fxbus.Flow, out chan *message.Message, lease fxbus.LaneLease) (ownership.Lane, error) {
	if err := p.takeLaneConsumer(topic, lease.Lane); err != nil {
		return nil, err
	}
	lane := &laneOf{out: out, lease: lease, ctx: fxbus.WithLaneLease(context.Background(), lease)}
	s, err := p.startSubscription(ctx, topic, flow, laneConsumer(p.cfg.Group, lease.Lane), lane)
	if err != nil {
		return nil, err
	}
	return laneSub{s}, nil
}

// laneSub is a lane's subscription, as the Driver stops it.
type laneSub struct{ s *subscription }

// Fence stops the subscription without giving anything back, the lane
// may be another replica's already: what it held is stale.
func (l laneSub) Fence() {
	s := l.s
	s.mu.Lock()
	s.gen++
	s.mu.Unlock()
	s.goroutines.Add(1)
	go func() { // its drain may wait on the server: the other lanes' leases must not
		defer s.goroutines.Done()
		s.stop()
	}()
}

// Fenced is closed once everything the subscription held is settled.
func (l laneSub) Fenced() <-chan struct{} { return l.s.done }

// Stop drains the subscription and gives back what it holds once its
// handlers are done.
func (l laneSub) Stop() { l.s.stop() }

// Wait returns once the subscription's goroutines, its handlers'
// included, are done.
func (l laneSub) Wait() { l.s.goroutines.Wait() }

// takeLaneConsumer makes lane n's consumer, or remakes it from its ack
// floor + 1. A new one starts where the group's consumer of the whole
// topic acknowledged up to, when there is one (a group that consumed
// before it had lanes), else at the stream's start.
func (p *PubSub) takeLaneConsumer(topic string, n int) error {
	stream, name := streamName(topic), laneConsumer(p.cfg.Group, n)
	start := uint64(0)
	info, err := p.js.ConsumerInfo(stream, name)
	switch {
	case errors.Is(err, nats.ErrConsumerNotFound):
		if g, err := p.js.ConsumerInfo(stream, p.cfg.Group); err == nil {
			start = g.AckFloor.Stream + 1
		}
	case err != nil:
		return fmt.Errorf("natsjs: consumer %s on %s: %w", name, stream, err)
	default:
		start = info.AckFloor.Stream + 1
		if err := p.js.DeleteConsumer(stream, name); err != nil && !errors.Is(err, nats.ErrConsumerNotFound) {
			return fmt.Errorf("natsjs: remake consumer %s on %s: delete: %w", name, stream, err)
		}
	}
	cfg := p.consumerConfig(start)
	cfg.Durable, cfg.FilterSubject = name, laneSubject(topic, n)
	if _, err := p.js.AddConsumer(stream, cfg); err != nil {
		return fmt.Errorf("natsjs: make consumer %s on %s from stream sequence %d: %w", name, stream, max(start, 1), err)
	}
	return nil
}

// laneWarn logs the trouble of topic's lane set.
func (p *PubSub) laneWarn(topic string) func(ownership.Trouble, int, error) {
	log := p.cfg.Logger.With(zap.String("topic", topic))
	return func(trouble ownership.Trouble, n int, err error) {
		switch trouble {
		case ownership.NotRenewed:
			log.Warn("natsjs: the lanes' leases were not renewed; the lanes held count as held until their lease runs out", zap.Error(err))
		case ownership.NotStarted:
			log.Warn("natsjs: a lane taken cannot be consumed yet; tried again at the next step", zap.Int("lane", n), zap.Error(err))
		case ownership.NotGivenBack:
			log.Warn("natsjs: a lane given up was not given back; it goes to its next owner when its lease runs out", zap.Int("lane", n), zap.Error(err))
		case ownership.NotLeft:
			log.Warn("natsjs: a replica leaving did not give its lanes back; they go to the others when their leases run out", zap.Error(err))
		}
	}
}
