package redisbus

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	"go.uber.org/zap"
)

// A subscription with InOrder on a topic of more than one lane: the
// Group's replicas share the lanes, each lane's stream read by one
// replica at a time.

func (p *PubSub) subscribeLanes(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	lanes := p.lanesOf(topic)
	co, err := ownership.New(&leaseStore{client: p.client, key: "fxcqrs:own:" + topic + ":" + p.cfg.Group},
		ownership.Config{Member: ownership.MemberOr(p.cfg.Consumer), Lanes: lanes, Lease: p.cfg.Lease})
	if err != nil {
		return nil, fmt.Errorf("redisbus: the lanes of %s: %w", topic, err)
	}
	select {
	case <-p.closing:
		return nil, errLaneClosed
	default:
	}
	flow.InFlight = max(1, flow.InFlight/lanes)
	out := make(chan *message.Message)
	d := ownership.NewDriver(co, ownership.DriverConfig{
		Warn: p.laneWarn(topic), Out: out, Stop: p.closing,
		Start: func(lease fxbus.LaneLease) (ownership.Lane, error) {
			return p.startLane(ctx, topic, flow, out, lease), nil
		},
	})
	p.subs.Add(1)
	go func() {
		defer p.subs.Done()
		d.Run(ctx)
	}()
	return out, nil
}

// startLane reads the lane of lease: under the lane's one consumer name,
// its pending entries first (what the previous owner held), then new
// ones. Fenced or stopped alike, it stops reading at once; its
// acknowledgements stop with the lease (settle checks it).
func (p *PubSub) startLane(ctx context.Context, topic string, flow fxbus.Flow, out chan *message.Message, lease fxbus.LaneLease) ownership.Lane {
	ctx, cancel := context.WithCancel(ctx)
	s := p.startStream(ctx, laneStream(topic, lease.Lane), flow, laneConsumerName, &laneOf{out: out, lease: lease})
	return ownership.CancelLane{Cancel: cancel, Ended: s.ended}
}

// laneWarn logs the trouble of topic's lane set.
func (p *PubSub) laneWarn(topic string) func(ownership.Trouble, int, error) {
	log := p.cfg.Logger.With(zap.String("topic", topic))
	return func(trouble ownership.Trouble, n int, err error) {
		switch trouble {
		case ownership.NotRenewed:
			log.Warn("redisbus: the lanes' leases were not renewed; the lanes held count as held until their lease runs out", zap.Error(err))
		case ownership.NotGivenBack:
			log.Warn("redisbus: a lane given up was not given back; it goes to its next owner when its lease runs out", zap.Int("lane", n), zap.Error(err))
		case ownership.NotLeft:
			log.Warn("redisbus: a replica leaving did not give its lanes back; they go to the others when their leases run out", zap.Error(err))
		}
	}
}
