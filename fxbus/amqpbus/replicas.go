package amqpbus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	"go.uber.org/zap"
)

// A subscription on a topic of more than one lane: the Group's replicas
// share the lanes, each lane's queue consumed by one replica at a time,
// the one that holds its lease in Config.Leases. A lane's queue has a
// single active consumer too: should two replicas ever consume it at
// once (a replica stalled past its lease, whose connection is still
// open), RabbitMQ delivers to the first only, until its channel closes.

// laneOf is what a lane's consumer, among a lane set's, has of it: the
// set's channel, the lane's lease, and its messages' context.
type laneOf struct {
	out   chan *message.Message // the set's: the consumer does not close it
	lease fxbus.LaneLease
	ctx   context.Context // the subscription's, with the lease
}

// laneSet is one such subscription.
type laneSet struct {
	p        *PubSub
	ctx      context.Context
	topic    string
	flow     fxbus.Flow // per lane
	co       *ownership.Coordinator
	out      chan *message.Message
	given    chan int // a lane given up and drained: release its lease
	epochs   map[int]uint64
	subs     map[int]*laneConsumer // the lanes consumed
	giving   map[int]bool          // being drained, to be released
	stopping map[int]*consumer     // fenced, still settling: not consumed again until they end
}

// laneConsumer is a lane being consumed: its consumer and how to end it.
type laneConsumer struct {
	c      *consumer
	cancel context.CancelFunc
}

// subscribeLanes declares topic's lanes and starts a lane set on them:
// the replica joins its Group's members and consumes the lanes it comes
// to own, each with a prefetch of InFlight/Lanes.
func (p *PubSub) subscribeLanes(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	if err := p.checkLaneNames(topic); err != nil {
		return nil, err
	}
	conn, err := p.connection()
	if err == nil {
		err = p.declareLanes(conn, topic, true)
	}
	if err != nil {
		return nil, fmt.Errorf("amqpbus: subscribe to %s for %q: %w", topic, p.cfg.Group, err)
	}
	member := p.cfg.Member
	if member == "" {
		member = strconv.FormatUint(rand.Uint64(), 36)
	}
	lanes := p.cfg.lanesOf(topic)
	co, err := ownership.New(prefixedStore{s: p.cfg.Leases, prefix: leasePrefix(topic, p.cfg.Group)},
		ownership.Config{Member: member, Lanes: lanes, Lease: p.cfg.Lease})
	if err != nil {
		return nil, fmt.Errorf("amqpbus: the lanes of %s: %w", topic, err)
	}
	flow.InFlight = max(1, flow.InFlight/lanes)
	ls := &laneSet{
		p: p, ctx: ctx, topic: topic, flow: flow, co: co,
		out: make(chan *message.Message), given: make(chan int, lanes), epochs: map[int]uint64{},
		subs: map[int]*laneConsumer{}, giving: map[int]bool{}, stopping: map[int]*consumer{},
	}
	p.subMu.Lock() // Close waits for p.subs: add only while it is open
	defer p.subMu.Unlock()
	select {
	case <-p.closing:
		return nil, fmt.Errorf("amqpbus: subscribe to %s: the PubSub is closed", topic)
	default:
	}
	p.subs.Add(1)
	go func() {
		defer p.subs.Done()
		ls.run()
	}()
	return ls.out, nil
}

func (ls *laneSet) run() {
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
			ls.leave(true)
			return
		case <-ls.p.closing:
			ls.leave(true)
			return
		case <-ls.p.killed:
			<-ls.p.closing
			ls.leave(false)
			return
		}
	}
}

// step renews the leases and follows the plan: it fences the lanes lost,
// drains those to give up, and consumes those held and not consumed.
func (ls *laneSet) step() {
	plan, err := ls.co.Step(context.Background())
	if err != nil {
		ls.p.cfg.Logger.Warn("amqpbus: the lanes' leases were not renewed; the lanes held count as held until their lease runs out", zap.String("topic", ls.topic), zap.Error(err))
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
		l := ls.subs[n]
		delete(ls.subs, n)
		go func() { // drained once its handlers are done and its channel closed, then released
			if l != nil {
				l.cancel()
				<-l.c.ended
			}
			ls.given <- n
		}()
	}
	for n, c := range ls.stopping {
		select {
		case <-c.ended:
			delete(ls.stopping, n)
		default:
		}
	}
	for n, epoch := range ls.epochs {
		l := ls.subs[n]
		switch {
		case ls.giving[n]:
		case l != nil && !ls.co.Held(n):
			ls.fence(n) // the lease ran out unrenewed: consumed again once renewed
		case l == nil && ls.co.Held(n) && ls.stopping[n] == nil:
			ls.start(n, epoch)
		}
	}
}

// start consumes lane n, whose lease this replica took with epoch: what
// the previous owner held and did not acknowledge went back to the head
// of the lane's queue when its channel closed, and comes first.
func (ls *laneSet) start(n int, epoch uint64) {
	ctx, cancel := context.WithCancel(ls.ctx)
	lease := fxbus.LaneLease{Lane: n, Epoch: epoch, Held: func() bool { return ls.co.Held(n) }}
	lane := &laneOf{out: ls.out, lease: lease, ctx: fxbus.WithLaneLease(ls.ctx, lease)}
	c, err := ls.p.startConsumer(ctx, ls.topic, ls.p.laneQueue(ls.topic, n), ls.flow, lane)
	if err != nil {
		cancel()
		ls.p.cfg.Logger.Warn("amqpbus: a lane held could not be consumed; tried again at the next step", zap.String("topic", ls.topic), zap.Int("lane", n), zap.Error(err))
		return
	}
	ls.subs[n] = &laneConsumer{c: c, cancel: cancel}
}

// fence stops consuming lane n at once, and does not consume it again
// until its channel is closed. What its handlers settle meanwhile is
// acknowledged or nacked as ever: the inbox refused the effects of those
// handled past the lease (nacked, back in their places), and no other
// replica gets a message of the lane before this channel closes (the
// queue's single active consumer), so an acknowledgement cannot come
// after another's handling.
func (ls *laneSet) fence(n int) {
	l := ls.subs[n]
	if l == nil {
		return
	}
	delete(ls.subs, n)
	l.cancel()
	ls.stopping[n] = l.c
}

func (ls *laneSet) release(n int) {
	if !ls.giving[n] {
		return
	}
	delete(ls.giving, n)
	delete(ls.epochs, n)
	if err := ls.co.Release(context.Background(), n); err != nil {
		ls.p.cfg.Logger.Warn("amqpbus: a lane given up was not given back; it goes to its next owner when its lease runs out", zap.String("topic", ls.topic), zap.Int("lane", n), zap.Error(err))
	}
}

// leave ends every lane, waits for their handlers and channels, gives
// the leases back (unless killed, for the tests: a killed process gives
// nothing back) and closes the channel.
func (ls *laneSet) leave(giveBack bool) {
	for _, l := range ls.subs {
		l.cancel()
	}
	for _, l := range ls.subs {
		<-l.c.ended
	}
	for _, c := range ls.stopping {
		<-c.ended
	}
	for len(ls.giving) > 0 {
		n := <-ls.given
		if giveBack {
			ls.release(n)
		} else {
			delete(ls.giving, n)
		}
	}
	if giveBack {
		if err := ls.co.Leave(context.Background()); err != nil {
			ls.p.cfg.Logger.Warn("amqpbus: a replica leaving did not give its lanes back; they go to the others when their leases run out", zap.String("topic", ls.topic), zap.Error(err))
		}
	}
	close(ls.out)
}
