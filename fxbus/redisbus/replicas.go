package redisbus

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
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
		Broker: "redisbus", Topic: topic, Logger: p.cfg.Logger, Out: out, Stop: p.closing,
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
