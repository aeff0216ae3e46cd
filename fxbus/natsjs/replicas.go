package natsjs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// laneSet is one such subscription: the lanes this replica owns, each a
// subscription of its own on the lane's consumer, all handing over to one
// channel.
type laneSet struct {
	p        *PubSub
	ctx      context.Context
	topic    string
	flow     fxbus.Flow // per lane
	lanes    int
	co       *ownership.Coordinator
	out      chan *message.Message
	stopC    chan struct{}
	once     sync.Once
	ended    chan struct{}
	given    chan int // a lane given up and drained: release its lease
	epochs   map[int]uint64
	subs     map[int]*subscription // the lanes consumed
	giving   map[int]bool          // being drained, to be released
	stopping map[int]*subscription // fenced, still settling: not consumed again until they end
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
	member := p.cfg.Member
	if member == "" {
		member = strconv.FormatUint(rand.Uint64(), 36)
	}
	lanes := p.lanesOf(topic)
	co, err := ownership.New(&laneStore{kv: kv, prefix: streamName(topic) + "." + p.cfg.Group + "."},
		ownership.Config{Member: member, Lanes: lanes, Lease: p.cfg.Lease})
	if err != nil {
		return nil, fmt.Errorf("natsjs: the lanes of %s: %w", topic, err)
	}
	flow.InFlight = max(1, flow.InFlight/lanes)
	ls := &laneSet{
		p: p, ctx: ctx, topic: topic, flow: flow, lanes: lanes, co: co,
		out: make(chan *message.Message), stopC: make(chan struct{}), ended: make(chan struct{}),
		given: make(chan int, lanes), epochs: map[int]uint64{},
		subs: map[int]*subscription{}, giving: map[int]bool{}, stopping: map[int]*subscription{},
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("natsjs: closed")
	}
	p.sets[ls] = struct{}{}
	p.mu.Unlock()
	go ls.run()
	return ls.out, nil
}

// stop ends the set: its lanes are drained and given back.
func (ls *laneSet) stop() { ls.once.Do(func() { close(ls.stopC) }) }

// run steps the lanes' ownership every Lease/6 until the set stops.
func (ls *laneSet) run() {
	defer close(ls.ended)
	defer func() {
		ls.p.mu.Lock()
		delete(ls.p.sets, ls)
		ls.p.mu.Unlock()
	}()
	tick := time.NewTicker(max(ls.p.cfg.Lease/6, 10*time.Millisecond))
	defer tick.Stop()
	ls.step()
	for {
		select {
		case <-tick.C:
			ls.step()
		case n := <-ls.given:
			ls.release(n)
		case <-ls.ctx.Done():
			ls.leave()
			return
		case <-ls.stopC:
			ls.leave()
			return
		}
	}
}

// step renews, takes and gives up lanes, and starts or fences their
// subscriptions.
func (ls *laneSet) step() {
	plan, err := ls.co.Step(context.Background())
	if err != nil {
		ls.p.cfg.Logger.Warn("natsjs: the lanes' leases were not renewed; the lanes held count as held until their lease runs out", zap.String("topic", ls.topic), zap.Error(err))
	}
	for _, n := range plan.Lost {
		ls.fence(n)
		delete(ls.epochs, n)
		delete(ls.giving, n)
	}
	for n, epoch := range plan.Taken {
		ls.epochs[n] = epoch
	}
	for _, n := range plan.Give {
		if ls.giving[n] {
			continue
		}
		ls.giving[n] = true
		s := ls.subs[n]
		delete(ls.subs, n)
		go func() { // drained once its handlers are done, then released
			if s != nil {
				s.stop()
				s.goroutines.Wait()
				_ = ls.p.conn.FlushTimeout(time.Second) // the give-back reaches the server first
			}
			ls.given <- n
		}()
	}
	for n, s := range ls.stopping {
		select {
		case <-s.done:
			delete(ls.stopping, n)
		default:
		}
	}
	for n, epoch := range ls.epochs {
		switch s := ls.subs[n]; {
		case ls.giving[n]:
		case s != nil && !ls.co.Held(n):
			ls.fence(n) // the lease ran out unrenewed: consumed again once renewed
		case s == nil && ls.co.Held(n) && ls.stopping[n] == nil:
			if err := ls.start(n, epoch); err != nil {
				ls.p.cfg.Logger.Warn("natsjs: a lane taken cannot be consumed yet; tried again at the next step", zap.String("topic", ls.topic), zap.Int("lane", n), zap.Error(err))
			}
		}
	}
}

// start consumes lane n, whose lease this replica took with epoch: the
// lane's consumer is remade from its ack floor + 1, so that what its
// previous owner held and had not acknowledged comes first, in stream
// order, and so that the previous owner, if it only stalled, can
// acknowledge nothing more.
func (ls *laneSet) start(n int, epoch uint64) error {
	if err := ls.p.takeLaneConsumer(ls.topic, n); err != nil {
		return err
	}
	lease := fxbus.LaneLease{Lane: n, Epoch: epoch, Held: func() bool { return ls.co.Held(n) }}
	lane := &laneOf{out: ls.out, lease: lease, ctx: fxbus.WithLaneLease(context.Background(), lease)}
	s, err := ls.p.startSubscription(ls.ctx, ls.topic, ls.flow, laneConsumer(ls.p.cfg.Group, n), lane)
	if err != nil {
		return err
	}
	ls.subs[n] = s
	return nil
}

// fence stops lane n's subscription without giving anything back: the
// lane may be another replica's already.
func (ls *laneSet) fence(n int) {
	s := ls.subs[n]
	if s == nil {
		return
	}
	delete(ls.subs, n)
	s.mu.Lock()
	s.gen++
	s.mu.Unlock()
	s.goroutines.Add(1)
	go func() { // its drain may wait on the server: the other lanes' leases must not
		defer s.goroutines.Done()
		s.stop()
	}()
	ls.stopping[n] = s
}

// release gives lane n's lease back, drained.
func (ls *laneSet) release(n int) {
	if !ls.giving[n] {
		return
	}
	delete(ls.giving, n)
	delete(ls.epochs, n)
	if err := ls.co.Release(context.Background(), n); err != nil {
		ls.p.cfg.Logger.Warn("natsjs: a lane given up was not given back; it goes to its next owner when its lease runs out", zap.String("topic", ls.topic), zap.Int("lane", n), zap.Error(err))
	}
}

// leave drains every lane, gives back the leases, and closes the channel.
func (ls *laneSet) leave() {
	subs := make([]*subscription, 0, len(ls.subs))
	for _, s := range ls.subs {
		s.stop()
		subs = append(subs, s)
	}
	for _, s := range ls.stopping {
		subs = append(subs, s)
	}
	for _, s := range subs {
		s.goroutines.Wait()
	}
	for len(ls.giving) > 0 { // the drains under way
		ls.release(<-ls.given)
	}
	_ = ls.p.conn.FlushTimeout(time.Second)
	if err := ls.co.Leave(context.Background()); err != nil {
		ls.p.cfg.Logger.Warn("natsjs: a replica leaving did not give its lanes back; they go to the others when their leases run out", zap.String("topic", ls.topic), zap.Error(err))
	}
	close(ls.out)
}

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
