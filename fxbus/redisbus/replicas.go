package redisbus

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

// A subscription with InOrder on a topic of more than one lane: the
// Group's replicas share the lanes, each lane's stream read by one
// replica at a time.

// laneSet is one such subscription.
type laneSet struct {
	p        *PubSub
	ctx      context.Context
	topic    string
	flow     fxbus.Flow // per lane
	co       *ownership.Coordinator
	out      chan *message.Message
	given    chan int
	epochs   map[int]uint64
	subs     map[int]*laneReader // the lanes read
	giving   map[int]bool        // being drained, to be released
	stopping map[int]*stream     // fenced, still settling: not read again until they end
}

// laneReader is a lane being read: its stream and how to end it.
type laneReader struct {
	s      *stream
	cancel context.CancelFunc
}

func (p *PubSub) subscribeLanes(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	member := p.cfg.Consumer
	if member == "" {
		member = strconv.FormatUint(rand.Uint64(), 36)
	}
	lanes := p.lanesOf(topic)
	co, err := ownership.New(&leaseStore{client: p.client, key: "fxcqrs:own:" + topic + ":" + p.cfg.Group},
		ownership.Config{Member: member, Lanes: lanes, Lease: p.cfg.Lease})
	if err != nil {
		return nil, fmt.Errorf("redisbus: the lanes of %s: %w", topic, err)
	}
	select {
	case <-p.closing:
		return nil, errLaneClosed
	default:
	}
	flow.InFlight = max(1, flow.InFlight/lanes)
	ls := &laneSet{
		p: p, ctx: ctx, topic: topic, flow: flow, co: co,
		out: make(chan *message.Message), given: make(chan int, lanes), epochs: map[int]uint64{},
		subs: map[int]*laneReader{}, giving: map[int]bool{}, stopping: map[int]*stream{},
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
			ls.leave()
			return
		case <-ls.p.closing:
			ls.leave()
			return
		}
	}
}

func (ls *laneSet) step() {
	plan, err := ls.co.Step(context.Background())
	if err != nil {
		ls.p.cfg.Logger.Warn("redisbus: the lanes' leases were not renewed; the lanes held count as held until their lease runs out", zap.String("topic", ls.topic), zap.Error(err))
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
		go func() { // drained once its handlers are done, then released
			if l != nil {
				l.cancel()
				<-l.s.ended
			}
			ls.given <- n
		}()
	}
	for n, s := range ls.stopping {
		select {
		case <-s.ended:
			delete(ls.stopping, n)
		default:
		}
	}
	for n, epoch := range ls.epochs {
		l := ls.subs[n]
		switch {
		case ls.giving[n]:
		case l != nil && !ls.co.Held(n):
			ls.fence(n) // the lease ran out unrenewed: read again once renewed
		case l == nil && ls.co.Held(n) && ls.stopping[n] == nil:
			ls.start(n, epoch)
		}
	}
}

// start reads lane n, whose lease this replica took with epoch: under the
// lane's one consumer name, its pending entries first (what the previous
// owner held), then new ones.
func (ls *laneSet) start(n int, epoch uint64) {
	ctx, cancel := context.WithCancel(ls.ctx)
	lease := fxbus.LaneLease{Lane: n, Epoch: epoch, Held: func() bool { return ls.co.Held(n) }}
	s := ls.p.startStream(ctx, laneStream(ls.topic, n), ls.flow, laneConsumerName, &laneOf{out: ls.out, lease: lease})
	ls.subs[n] = &laneReader{s: s, cancel: cancel}
}

// fence stops reading lane n at once; its acknowledgements stop with the
// lease (settle checks it), and it is not read again until it has ended.
func (ls *laneSet) fence(n int) {
	l := ls.subs[n]
	if l == nil {
		return
	}
	delete(ls.subs, n)
	l.cancel()
	ls.stopping[n] = l.s
}

func (ls *laneSet) release(n int) {
	if !ls.giving[n] {
		return
	}
	delete(ls.giving, n)
	delete(ls.epochs, n)
	if err := ls.co.Release(context.Background(), n); err != nil {
		ls.p.cfg.Logger.Warn("redisbus: a lane given up was not given back; it goes to its next owner when its lease runs out", zap.String("topic", ls.topic), zap.Int("lane", n), zap.Error(err))
	}
}

// leave ends every lane, waits for their handlers, gives the leases back
// and closes the channel.
func (ls *laneSet) leave() {
	for _, l := range ls.subs {
		l.cancel()
	}
	for _, l := range ls.subs {
		<-l.s.ended
	}
	for _, s := range ls.stopping {
		<-s.ended
	}
	for len(ls.giving) > 0 {
		ls.release(<-ls.given)
	}
	if err := ls.co.Leave(context.Background()); err != nil {
		ls.p.cfg.Logger.Warn("redisbus: a replica leaving did not give its lanes back; they go to the others when their leases run out", zap.String("topic", ls.topic), zap.Error(err))
	}
	close(ls.out)
}
