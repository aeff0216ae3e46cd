package amqpbus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/lanes"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Subscribe consumes the Group's queue on topic, at most Config.Prefetch
// messages at once, declaring and binding the queue if it does not exist.
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return p.SubscribeFlow(ctx, topic, fxbus.Flow{InFlight: p.cfg.Prefetch})
}

// SubscribeFlow consumes the Group's queue on topic (declared and bound
// if it does not exist) with a prefetch of flow.InFlight: RabbitMQ hands
// over that many messages before the first is acknowledged, and each is
// acknowledged or nacked (requeued) by itself. With flow.InOrder a key's
// messages are handed over one at a time, in the queue's order, and a
// nacked message is requeued together with its key's messages received
// after it, so that it comes back before them.
//
// The subscription ends when ctx ends: RabbitMQ stops delivering, the
// channel closes once what was handed over is settled (or the PubSub is
// closed), and what was not handed over goes back to the queue in place.
func (p *PubSub) SubscribeFlow(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	if p.cfg.Group == "" {
		return nil, errors.New("amqpbus: Subscribe needs Config.Group, the name of the service's queue")
	}
	if err := p.CheckTopic(topic); err != nil {
		return nil, err
	}
	if flow.InFlight <= 0 {
		flow.InFlight = p.cfg.Prefetch
	}
	conn, err := p.connection()
	if err == nil {
		err = p.checkRecordedLanes(conn, topic)
	}
	if err != nil {
		return nil, fmt.Errorf("amqpbus: subscribe to %s for %q: %w", topic, p.cfg.Group, err)
	}
	if p.cfg.lanesOf(topic) > 1 {
		return p.subscribeLanes(ctx, topic, flow)
	}
	c, err := p.startConsumer(ctx, topic, p.queue(topic), flow, nil)
	if err != nil {
		return nil, fmt.Errorf("amqpbus: subscribe to %s for %q: %w", topic, p.cfg.Group, err)
	}
	return c.out, nil
}

// startConsumer consumes queue, the Group's on topic (declared and bound
// first) or, with lane, one of its lanes' (declared already), handing
// over to its own channel or, with lane, to the lane set's.
func (p *PubSub) startConsumer(ctx context.Context, topic, queue string, flow fxbus.Flow, lane *laneOf) (*consumer, error) {
	c := &consumer{
		p: p, topic: topic, queue: queue, flow: flow, lane: lane,
		out:     make(chan *message.Message),
		ended:   make(chan struct{}),
		wake:    make(chan struct{}, 1),
		idle:    make(chan struct{}, 1),
		q:       lanes.New[*delivery](flow.InOrder),
		awaited: map[string]map[string]uint64{},
		parked:  map[string][]*delivery{},
		strays:  map[string]int{},
	}
	if lane != nil {
		c.out = lane.out
	}
	deliveries, err := c.open()
	if err != nil {
		return nil, err
	}
	p.subs.Add(2)
	handed := make(chan struct{})
	go func() {
		defer p.subs.Done()
		defer close(handed)
		c.hand(ctx)
	}()
	go func() {
		defer p.subs.Done()
		defer close(c.ended)
		c.run(ctx, deliveries, handed)
	}()
	return c, nil
}

// consumer is one subscription: a channel with a consumer on the queue,
// what it received and has not handed over, and what it handed over.
type consumer struct {
	p     *PubSub
	topic string
	queue string
	flow  fxbus.Flow
	lane  *laneOf // a lane's consumer, or nil
	out   chan *message.Message
	ended chan struct{} // closed once the channel is closed: what it held is back in the queue
	wake  chan struct{} // the queue changed
	idle  chan struct{} // nothing is handed over

	mu      sync.Mutex
	ch      *amqp.Channel
	tag     string
	gen     int    // the channel's: a delivery of an older one cannot be settled
	seq     uint64 // arrival order
	q       *lanes.Queue[*delivery]
	handed  int
	awaited map[string]map[string]uint64 // by key: ids nacked and not back yet, with their ranks
	parked  map[string][]*delivery       // by key: those back, until all are
	strays  map[string]int               // by key: later messages requeued while waiting
	watch   sync.WaitGroup
}

// strayLimit bounds how many of a key's later messages are requeued while
// the key waits for its nacked ones to come back (a message that never
// comes back, dropped by a TTL or a length limit, must not hold its key
// for ever).
const strayLimit = 1000

// delivery is a message RabbitMQ delivered on the channel of gen.
type delivery struct {
	d   amqp.Delivery
	seq uint64
	key string
	id  string
	gen int
}

func (d *delivery) Seq() uint64 { return d.seq }
func (d *delivery) Key() string { return d.key }

// open opens a channel with the flow's prefetch, declares the queue and
// starts consuming.
func (c *consumer) open() (<-chan amqp.Delivery, error) {
	conn, err := c.p.connection()
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (<-chan amqp.Delivery, error) {
		_ = ch.Close()
		return nil, err
	}
	if err := ch.Qos(c.flow.InFlight, 0, false); err != nil {
		return fail(err)
	}
	if c.lane == nil {
		if err := c.p.declare(ch, c.topic); err != nil {
			return fail(err)
		}
	}
	tag := fmt.Sprintf("fxbus-%s-%016x", c.p.cfg.Group, rand.Uint64())
	deliveries, err := ch.Consume(c.queue, tag, false, false, false, false, nil)
	if err != nil {
		return fail(err)
	}
	c.mu.Lock()
	c.ch, c.tag = ch, tag
	c.gen++
	c.mu.Unlock()
	return deliveries, nil
}

// run receives deliveries, opens the channel again when it is lost, and
// ends the subscription when ctx ends.
func (c *consumer) run(ctx context.Context, deliveries <-chan amqp.Delivery, handed <-chan struct{}) {
	for !c.receive(ctx, deliveries) {
		// The channel was lost: RabbitMQ requeued what it held, in place.
		c.mu.Lock()
		c.q.Drain()
		clear(c.awaited)
		clear(c.parked)
		clear(c.strays)
		c.ch = nil
		c.mu.Unlock()
		var ok bool
		if deliveries, ok = c.reopen(ctx); !ok {
			break
		}
	}
	<-handed
	if c.lane == nil {
		close(c.out) // a lane's is the lane set's
	}
	c.mu.Lock()
	ch, tag := c.ch, c.tag
	c.mu.Unlock()
	if ch == nil {
		c.watch.Wait()
		return
	}
	// Stop the deliveries; what arrives meanwhile is not acknowledged and
	// goes back with the channel.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range deliveries {
			// drained until the channel ends
		}
	}()
	_ = ch.Cancel(tag, false)
	for { // what was handed over is settled on this channel, or the PubSub closes
		c.mu.Lock()
		n := c.handed
		c.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-c.idle:
		case <-c.p.closing:
			n = 0
		}
		if n == 0 {
			break
		}
	}
	c.watch.Wait() // acks already made go out before the channel closes
	c.mu.Lock()
	c.ch = nil
	c.mu.Unlock()
	_ = ch.Close()
	<-drained
}

// receive queues deliveries until ctx ends (true) or the channel is lost
// (false).
func (c *consumer) receive(ctx context.Context, deliveries <-chan amqp.Delivery) bool {
	for {
		select {
		case <-ctx.Done():
			return true
		case <-c.p.closing:
			return true
		case d, ok := <-deliveries:
			if !ok {
				return ctx.Err() != nil
			}
			c.take(d)
		}
	}
}

// reopen opens the channel again, backing off, until it is open (true)
// or ctx ends (false).
func (c *consumer) reopen(ctx context.Context) (<-chan amqp.Delivery, bool) {
	wait := 100 * time.Millisecond
	for {
		if d, err := c.open(); err == nil {
			return d, true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, false
		case <-c.p.closing:
			t.Stop()
			return nil, false
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// take queues d. A key that waits for nacked messages to come back keeps
// order by rank, the place of a message in the queue: a message's rank is
// its arrival count when it first arrived on this channel, kept when it
// comes back, and the queue hands over by rank. Those that come back are
// parked until all have (RabbitMQ puts each back in its place, but one
// requeued later may arrive after an earlier one that was already on its
// way); a later message of the key that arrives meanwhile is requeued
// too, and awaited.
func (c *consumer) take(d amqp.Delivery) {
	key, _ := d.Headers[fxbus.MetadataKey].(string)
	id, _ := d.Headers[wamqp.DefaultMessageUUIDHeaderKey].(string)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	it := &delivery{d: d, seq: c.seq, key: key, id: id, gen: c.gen}
	aw := c.awaited[key]
	if !c.flow.InOrder || key == "" || len(aw) == 0 {
		c.q.Push(it)
		c.signal(c.wake)
		return
	}
	if rank, ok := aw[id]; ok {
		delete(aw, id)
		it.seq = rank
	} else if c.strays[key] < strayLimit {
		c.strays[key]++
		aw[id] = it.seq
		_ = d.Nack(false, true)
		return
	} else { // something awaited never came back: go on without it
		clear(aw)
	}
	c.parked[key] = append(c.parked[key], it)
	if len(aw) > 0 {
		return
	}
	for _, p := range c.parked[key] {
		c.q.Push(p)
	}
	delete(c.parked, key)
	delete(c.awaited, key)
	delete(c.strays, key)
	c.signal(c.wake)
}

// hand hands queued messages over, first in order and, with InOrder, one
// of a key at a time, until ctx ends.
func (c *consumer) hand(ctx context.Context) {
	for {
		c.mu.Lock()
		it, ok := c.q.Next()
		if ok {
			c.handed++
		}
		c.mu.Unlock()
		if !ok {
			select {
			case <-c.wake:
				continue
			case <-ctx.Done():
				return
			case <-c.p.closing:
				return
			}
		}
		msg := decode(it.d)
		if c.lane != nil {
			msg.SetContext(c.lane.ctx)
		} else {
			msg.SetContext(ctx)
		}
		select {
		case c.out <- msg:
			c.watch.Add(1)
			go func() {
				defer c.watch.Done()
				select {
				case <-msg.Acked():
					c.settle(it, true)
				case <-msg.Nacked():
					c.settle(it, false)
				case <-c.p.closing: // settled already, or RabbitMQ requeues it
					c.settleDone(it, msg)
				}
			}()
		case <-ctx.Done():
			c.unhand(it)
			return
		case <-c.p.closing:
			c.unhand(it)
			return
		}
	}
}

// settleDone settles msg if it was acknowledged or nacked already.
func (c *consumer) settleDone(it *delivery, msg *message.Message) {
	select {
	case <-msg.Acked():
		c.settle(it, true)
	case <-msg.Nacked():
		c.settle(it, false)
	default:
	}
}

// unhand puts back a message that was not handed over after all.
func (c *consumer) unhand(it *delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handed--
	c.q.Done(it.key)
	c.q.Push(it)
}

// settle acknowledges it or requeues it (with InOrder, with its key's
// messages received after it, in order, before any other ack goes out).
func (c *consumer) settle(it *delivery, acked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handed--
	c.q.Done(it.key)
	defer c.signal(c.wake)
	if c.handed == 0 {
		defer c.signal(c.idle)
	}
	if it.gen != c.gen || c.ch == nil {
		return // its channel is gone, and RabbitMQ requeued it
	}
	switch {
	case acked:
		_ = it.d.Ack(false)
	case c.flow.InOrder && it.key != "":
		aw := c.awaited[it.key]
		if aw == nil {
			aw = map[string]uint64{}
			c.awaited[it.key] = aw
		}
		_ = it.d.Nack(false, true)
		aw[it.id] = it.seq
		for _, later := range c.q.Remove(it.key, it.seq) {
			_ = later.d.Nack(false, true)
			aw[later.id] = later.seq
		}
	default:
		_ = it.d.Nack(false, true)
	}
}

func (c *consumer) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// decode reads d as watermill-amqp wrote it: the id from its header, the
// other headers as metadata (one that is not a string, written by another
// client, as its text).
func decode(d amqp.Delivery) *message.Message {
	id, _ := d.Headers[wamqp.DefaultMessageUUIDHeaderKey].(string)
	msg := message.NewMessage(id, d.Body)
	msg.Metadata = make(message.Metadata, len(d.Headers))
	for k, v := range d.Headers {
		if k == wamqp.DefaultMessageUUIDHeaderKey {
			continue
		}
		if s, ok := v.(string); ok {
			msg.Metadata[k] = s
		} else {
			msg.Metadata[k] = fmt.Sprint(v)
		}
	}
	if _, ok := msg.Metadata[contentTypeMetadata]; !ok && d.ContentType != "" {
		msg.Metadata[contentTypeMetadata] = d.ContentType // another client's, such as a CloudEvent's datacontenttype
	}
	return msg
}
