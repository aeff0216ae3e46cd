package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// SubscribeInFlight is the InFlight of a plain Subscribe.
const SubscribeInFlight = 16

// Subscribe is SubscribeFlow with InFlight SubscribeInFlight and InOrder:
// a key's messages one at a time, in offset order, other keys beside them.
// (Watermill's router acknowledges each message before it takes the next:
// under it, a topic is handled one message at a time.)
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return p.SubscribeFlow(ctx, topic, fxbus.Flow{InFlight: SubscribeInFlight, InOrder: true})
}

// SubscribeFlow joins the Group's consumer group on topic (cooperative
// sticky rebalancing) and hands its records over as messages
// (fxbus.FlowSubscriber): up to flow.InFlight at once, from any of the
// partitions assigned to this member; with flow.InOrder, a key's next
// message only once the one before it was acknowledged. A nacked message
// is handed over again before its key's later ones. Each partition's
// committed offset is the one after its highest contiguous acknowledged
// message, never past one that was not handled; commits go every
// Config.CommitInterval, and at once on a revoke. The channel closes when
// ctx ends or the PubSub closes, after the messages handed over were
// settled (or half the RebalanceTimeout passed) and the offsets committed.
func (p *PubSub) SubscribeFlow(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	if p.cfg.Group == "" {
		return nil, errors.New("kafkabus: Subscribe needs Config.Group, the name of the service's consumer group")
	}
	if err := CheckTopic(topic); err != nil {
		return nil, fmt.Errorf("kafkabus: subscribe: %w", err)
	}
	if flow.InFlight <= 0 {
		flow.InFlight = 1
	}
	c := &consumer{
		topic: topic, flow: flow, limit: max(4*flow.InFlight, minHeld), drainWait: p.cfg.RebalanceTimeout / 2,
		out: make(chan *message.Message), parts: map[int32]*partition{}, busy: map[string]bool{},
		handWake: make(chan struct{}, 1), pollWake: make(chan struct{}, 1),
		closing: make(chan struct{}), abandon: make(chan struct{}),
	}
	opts := append(clientOpts(p.cfg),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.RebalanceTimeout(p.cfg.RebalanceTimeout),
		// Committed every interval: what settle marked, the handled prefix
		// of each partition; a revoke commits its partitions itself.
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(p.cfg.CommitInterval),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), // a new group reads what was published before it
		kgo.FetchMaxPartitionBytes(int32(p.cfg.MaxRecordBytes)),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkabus: subscribe to %s: %w", topic, err)
	}
	c.cl = cl
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cl.Close()
		return nil, errors.New("kafkabus: subscribe: closed")
	}
	p.subs[c] = struct{}{}
	p.mu.Unlock()
	var pollCtx context.Context
	pollCtx, c.stopPoll = context.WithCancel(context.Background())
	c.loops.Add(2)
	go c.poll(pollCtx)
	go c.hand()
	go func() {
		select {
		case <-ctx.Done():
		case <-c.closing:
		}
		c.close()
		p.mu.Lock()
		delete(p.subs, c)
		p.mu.Unlock()
	}()
	return c.out, nil
}

// minHeld is the fewest records a subscription holds (handed over,
// waiting behind their key, or acknowledged behind one that is not) before
// it stops reading: enough to find keys free to run behind a slow one.
// The subscription does not pause partitions to bound each one: a resumed
// partition waits for the broker's fetch already in flight, up to its
// long poll, which stalled consuming.
const minHeld = 64

// consumer is one SubscribeFlow: a group member of its own on one topic.
type consumer struct {
	topic     string
	flow      fxbus.Flow
	limit     int           // records held (handed over or waiting) at most
	drainWait time.Duration // how long a revoke or a close waits for messages in flight
	cl        *kgo.Client
	out       chan *message.Message

	mu       sync.Mutex
	parts    map[int32]*partition // assigned to this member
	busy     map[string]bool      // keys with a message handed over (InOrder)
	inFlight int                  // handed over, not settled
	held     int                  // entries in parts
	turn     int                  // the partition the next search starts at

	handWake, pollWake chan struct{}

	closing  chan struct{} // closed by close: hand over nothing more
	abandon  chan struct{} // closed once close stopped waiting for messages in flight
	stopPoll context.CancelFunc
	loops    sync.WaitGroup // poll, hand
	watchers sync.WaitGroup // one per message in flight
	once     sync.Once
}

// partition is an assigned partition's records, from the first not yet
// acknowledged, in offset order.
type partition struct {
	num      int32
	entries  []*entry
	inFlight int
	draining bool            // revoked: hand over nothing more
	stop     chan struct{}   // closed when draining starts
	drained  chan struct{}   // closed when draining and nothing is in flight
	commit   kgo.EpochOffset // after the handled prefix; Offset -1: nothing handled yet
}

type entry struct {
	rec    *kgo.Record
	handed bool
	acked  bool
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// assigned makes the state of the partitions the group gave this member;
// franz-go calls it before it fetches them.
func (c *consumer) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range assigned[c.topic] {
		if _, ok := c.parts[n]; !ok {
			c.parts[n] = &partition{num: n, stop: make(chan struct{}), drained: make(chan struct{}), commit: kgo.EpochOffset{Epoch: -1, Offset: -1}}
		}
	}
}

// revoked gives partitions up: it hands over none of their records more,
// waits for their messages in flight (at most drainWait), commits how far
// they were handled (at once, not at the next interval), and forgets
// them. The group waits for this before it gives them to another member.
func (c *consumer) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	ps := c.startDrain(revoked[c.topic])
	if len(ps) == 0 {
		return
	}
	wait, cancel := context.WithTimeout(ctx, c.drainWait)
	defer cancel()
	for _, p := range ps {
		select {
		case <-p.drained:
		case <-wait.Done():
		}
	}
	c.mu.Lock()
	offsets := c.handled(ps)
	c.mu.Unlock()
	// Marked, then committed with every other mark: marks never go back,
	// so neither does this commit, whatever autocommit sent before it.
	c.cl.MarkCommitOffsets(offsets)
	commitCtx, cancelCommit := context.WithTimeout(context.WithoutCancel(ctx), c.drainWait)
	defer cancelCommit()
	_ = c.cl.CommitMarkedOffsets(commitCtx) // failed: the next member goes on from the last commit, and the inbox drops what it hands over again
	c.forget(ps)
}

// lost forgets partitions the group took away without a revoke (the
// session expired): they cannot be committed; their messages in flight
// finish unseen, and the next member reads them again.
func (c *consumer) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.forget(c.startDrain(lost[c.topic]))
}

func (c *consumer) startDrain(nums []int32) []*partition {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*partition
	for _, n := range nums {
		p, ok := c.parts[n]
		if !ok || p.draining {
			continue
		}
		p.draining = true
		close(p.stop)
		if p.inFlight == 0 {
			close(p.drained)
		}
		ps = append(ps, p)
	}
	return ps
}

func (c *consumer) forget(ps []*partition) {
	c.mu.Lock()
	for _, p := range ps {
		if c.parts[p.num] == p {
			delete(c.parts, p.num)
			c.held -= len(p.entries)
		}
	}
	c.mu.Unlock()
	signal(c.pollWake)
}

// handled is how far ps were handled; c.mu held.
func (c *consumer) handled(ps []*partition) map[string]map[int32]kgo.EpochOffset {
	m := map[int32]kgo.EpochOffset{}
	for _, p := range ps {
		if p.commit.Offset >= 0 {
			m[p.num] = p.commit
		}
	}
	return map[string]map[int32]kgo.EpochOffset{c.topic: m}
}

// poll reads records while fewer than limit are held.
func (c *consumer) poll(ctx context.Context) {
	defer c.loops.Done()
	for {
		c.mu.Lock()
		room := c.limit - c.held
		c.mu.Unlock()
		if room <= 0 {
			select {
			case <-c.pollWake:
				continue
			case <-ctx.Done():
				return
			}
		}
		fs := c.cl.PollRecords(ctx, room)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		c.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			p, ok := c.parts[r.Partition]
			if !ok || p.draining || r.Topic != c.topic {
				return // given up: the next owner reads it from the committed offset
			}
			if n := len(p.entries); n > 0 && p.entries[n-1].rec.Offset >= r.Offset {
				return
			}
			p.entries = append(p.entries, &entry{rec: r})
			c.held++
		})
		c.mu.Unlock()
		signal(c.handWake)
	}
}

// hand hands the next message that may go over, one at a time.
func (c *consumer) hand() {
	defer c.loops.Done()
	for {
		c.mu.Lock()
		p, e := c.next()
		if e == nil {
			c.mu.Unlock()
			select {
			case <-c.handWake:
				continue
			case <-c.closing:
				return
			}
		}
		e.handed = true
		p.inFlight++
		c.inFlight++
		key := c.keyOf(e)
		if key != "" {
			c.busy[key] = true
		}
		c.mu.Unlock()
		msg := toMessage(e.rec)
		select {
		case c.out <- msg:
			c.watchers.Add(1)
			go c.watch(p, e, msg)
		case <-p.stop:
			c.settle(p, e, false)
		case <-c.closing:
			c.settle(p, e, false)
			return
		}
	}
}

// keyOf is the key whose order e keeps: its record key, under InOrder.
func (c *consumer) keyOf(e *entry) string {
	if !c.flow.InOrder {
		return ""
	}
	return string(e.rec.Key)
}

// next is the first record of the assigned partitions, taken in turn,
// that may be handed over; c.mu held.
func (c *consumer) next() (*partition, *entry) {
	if c.inFlight >= c.flow.InFlight || len(c.parts) == 0 {
		return nil, nil
	}
	nums := make([]int32, 0, len(c.parts))
	for n := range c.parts {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	c.turn++
	for i := range nums {
		p := c.parts[nums[(c.turn+i)%len(nums)]]
		if p.draining {
			continue
		}
		for _, e := range p.entries {
			if e.handed || e.acked {
				continue
			}
			if key := c.keyOf(e); key != "" && c.busy[key] {
				continue
			}
			return p, e
		}
	}
	return nil, nil
}

// watch waits for msg's ack or nack.
func (c *consumer) watch(p *partition, e *entry, msg *message.Message) {
	defer c.watchers.Done()
	select {
	case <-msg.Acked():
		c.settle(p, e, true)
	case <-msg.Nacked():
		c.settle(p, e, false)
	case <-c.abandon:
	}
}

// settle records e's outcome: acknowledged, it may move the partition's
// commit; nacked (or not handed over after all), it waits to be handed
// over again, before its key's later records.
func (c *consumer) settle(p *partition, e *entry, acked bool) {
	c.mu.Lock()
	c.inFlight--
	p.inFlight--
	if key := c.keyOf(e); key != "" {
		delete(c.busy, key)
	}
	e.handed = false
	e.acked = acked
	var mark *kgo.Record // the last of the handled prefix, when it grew
	if acked {
		i := 0
		for i < len(p.entries) && p.entries[i].acked {
			i++
		}
		if i > 0 {
			last := p.entries[i-1].rec
			p.commit = kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: last.Offset + 1}
			p.entries = slices.Delete(p.entries, 0, i)
			if c.parts[p.num] == p {
				c.held -= i
				mark = last
			}
		}
	}
	if p.draining && p.inFlight == 0 {
		select {
		case <-p.drained:
		default:
			close(p.drained)
		}
	}
	c.mu.Unlock()
	if mark != nil {
		// Out of c.mu (franz-go takes its group's lock); a mark that
		// comes after a higher one of its partition is ignored.
		c.cl.MarkCommitRecords(mark)
	}
	signal(c.handWake)
	signal(c.pollWake)
}

// close stops handing over, waits for the messages in flight (at most
// drainWait), commits, leaves the group and closes the channel.
func (c *consumer) close() {
	c.once.Do(func() {
		close(c.closing)
		c.stopPoll()
		c.loops.Wait()
		c.mu.Lock()
		ps := make([]*partition, 0, len(c.parts))
		for _, p := range c.parts {
			ps = append(ps, p)
		}
		c.mu.Unlock()
		all := map[string][]int32{}
		for _, p := range ps {
			all[c.topic] = append(all[c.topic], p.num)
		}
		c.revoked(context.Background(), c.cl, all)
		close(c.abandon)
		c.watchers.Wait()
		c.cl.Close()
		close(c.out)
	})
}
