package amqpbus

import (
	"context"
	"fmt"

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
	lanes := p.cfg.lanesOf(topic)
	co, err := ownership.New(prefixedStore{s: p.cfg.Leases, prefix: leasePrefix(topic, p.cfg.Group)},
		ownership.Config{Member: ownership.MemberOr(p.cfg.Member), Lanes: lanes, Lease: p.cfg.Lease})
	if err != nil {
		return nil, fmt.Errorf("amqpbus: the lanes of %s: %w", topic, err)
	}
	flow.InFlight = max(1, flow.InFlight/lanes)
	out := make(chan *message.Message)
	d := ownership.NewDriver(co, ownership.DriverConfig{
		Warn: p.laneWarn(topic), Out: out, Stop: p.closing, Kill: p.killed,
		Start: func(lease fxbus.LaneLease) (ownership.Lane, error) {
			return p.startLane(ctx, topic, flow, out, lease)
		},
	})
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
		d.Run(ctx)
	}()
	return out, nil
}

// startLane consumes the lane of lease: what the previous owner held and
// did not acknowledge went back to the head of the lane's queue when its
// channel closed, and comes first.
//
// Fenced, the lane stops being consumed at once, and is not consumed
// again until its channel is closed. What its handlers settle meanwhile
// is acknowledged or nacked as ever: the inbox refused the effects of
// those handled past the lease (nacked, back in their places), and no
// other replica gets a message of the lane before this channel closes
// (the queue's single active consumer), so an acknowledgement cannot
// come after another's handling.
func (p *PubSub) startLane(ctx context.Context, topic string, flow fxbus.Flow, out chan *message.Message, lease fxbus.LaneLease) (ownership.Lane, error) {
	cctx, cancel := context.WithCancel(ctx)
	lane := &laneOf{out: out, lease: lease, ctx: fxbus.WithLaneLease(ctx, lease)}
	c, err := p.startConsumer(cctx, topic, p.laneQueue(topic, lease.Lane), flow, lane)
	if err != nil {
		cancel()
		return nil, err
	}
	return ownership.CancelLane{Cancel: cancel, Ended: c.ended}, nil
}

// laneWarn logs the trouble of topic's lane set.
func (p *PubSub) laneWarn(topic string) func(ownership.Trouble, int, error) {
	log := p.cfg.Logger.With(zap.String("topic", topic))
	return func(trouble ownership.Trouble, n int, err error) {
		switch trouble {
		case ownership.NotRenewed:
			log.Warn("amqpbus: the lanes' leases were not renewed; the lanes held count as held until their lease runs out", zap.Error(err))
		case ownership.NotStarted:
			log.Warn("amqpbus: a lane held could not be consumed; tried again at the next step", zap.Int("lane", n), zap.Error(err))
		case ownership.NotGivenBack:
			log.Warn("amqpbus: a lane given up was not given back; it goes to its next owner when its lease runs out", zap.Int("lane", n), zap.Error(err))
		case ownership.NotLeft:
			log.Warn("amqpbus: a replica leaving did not give its lanes back; they go to the others when their leases run out", zap.Error(err))
		}
	}
}
