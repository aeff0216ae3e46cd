package fxbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Embedded is the in-process broker: what a bus given no broker uses (one
// per process, shared by every such bus, so that two applications in one
// binary reach each other), and a broker of its own for tests and tools
// ([NewEmbedded]). It keeps nothing beyond the process. Its bounds:
//
//   - A subscription holds at most its Flow's InFlight messages handed
//     over and not yet acknowledged, through as many goroutines, whatever
//     the number published: a burst costs a bounded queue, never a
//     goroutine per message.
//   - Each subscription's consumer group holds at most
//     [EmbeddedConfig.Queue] messages waiting to be handed over; a publish
//     waits while a subscribed group's queue is full, that is, while its
//     consumer is that far behind (the outbox relay's publish waits for
//     room in the queues of the topic's subscriptions, not for the
//     handlers). A waiting publish fails, never hangs, when the group's
//     last subscription ends or the broker closes. A handler that
//     publishes into its own topic's full queue (or around a cycle of
//     topics) waits on itself until its subscription ends: keep such a
//     loop's fan-out below the queue.
//   - A publish to a topic that no subscription in the process consumes
//     fails: the broker keeps nothing for later.
//   - A payload above [EmbeddedConfig.MaxPayload] (64 MiB by default)
//     fails to publish, naming the limit.
//
// Its order: a group hands its messages over in the order they were
// published; with a Flow's InOrder, a key's next message is handed over
// only once the one before it is acknowledged, and a nacked message comes
// back first, before its key's later ones (as NATS JetStream does with
// natsjs). A message outlives its subscription's context: a consumer that
// stops finishes, acknowledges or nacks what it holds. What an ended
// subscription holds unacknowledged goes back to its group, in its place,
// when the group's next subscription starts with no other live (a restart
// in the process): that subscription gets them first, and their late
// acks count for nothing. While another subscription of the group lives,
// they wait for their ack or nack (the broker has no clock to time them
// out).
//
// A consumer group's subscriptions share its messages, as replicas of one
// service share a consumer group on a broker; every group of a topic gets
// every message. An Embedded's own Subscribe and SubscribeFlow consume in
// its default group; [Embedded.Group] names another. On the process's
// broker, each subscription of a bus is a group of its own, dropped when
// it ends: every bus that subscribes to a topic gets each message.
type Embedded struct {
	cfg EmbeddedConfig

	mu     sync.Mutex
	topics map[string]*memTopic
	closed bool
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup
}

// EmbeddedConfig is what an [Embedded] broker is made of. Every field is
// optional.
type EmbeddedConfig struct {
	// Queue bounds the messages a consumer group holds that are not yet
	// handed over: a publish waits while it is full. Default 1024.
	Queue int
	// MaxPayload is the largest payload published, in bytes. Default
	// 64 MiB.
	MaxPayload int
	// InFlight is the Flow of a subscription made with Subscribe, not
	// SubscribeFlow. Default 64.
	InFlight int
}

// NewEmbedded returns an in-process broker of its own.
func NewEmbedded(cfg EmbeddedConfig) *Embedded {
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 64 << 20
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 64
	}
	return &Embedded{cfg: cfg, topics: map[string]*memTopic{}, done: make(chan struct{})}
}

var (
	_ Broker         = (*Embedded)(nil)
	_ FlowSubscriber = (*Embedded)(nil)
	_ BatchPublisher = (*Embedded)(nil)
	_ FlowSubscriber = (*EmbeddedGroup)(nil)
)

// errEmbeddedClosed is the error of a publish or a subscribe on a closed
// in-process broker.
var errEmbeddedClosed = errors.New("fxbus: the embedded broker is closed")

// Capabilities says what the in-process broker does.
func (e *Embedded) Capabilities() Capabilities {
	return Capabilities{
		Name:        "embedded",
		OrderPerKey: true,
		Parallel:    true,
		MaxPayload:  e.cfg.MaxPayload,
		TopicRule:   "any non-empty name",
	}
}

// CheckTopic refuses an empty topic only.
func (e *Embedded) CheckTopic(topic string) error {
	if topic == "" {
		return errors.New("fxbus: the embedded broker: the topic is empty (its topics: any non-empty name)")
	}
	return nil
}

// Close ends every subscription and fails every publish, waiting or to
// come. It waits for the broker's goroutines to return.
func (e *Embedded) Close() error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.done)
		for _, t := range e.topics {
			for _, g := range t.groups {
				g.cond.Broadcast()
			}
		}
	}
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}

// Publish publishes msgs to topic, in order: each goes to every consumer
// group of the topic, waiting while a group's queue is full.
func (e *Embedded) Publish(topic string, msgs ...*message.Message) error {
	_, err := e.PublishBatch(topic, msgs)
	return err
}

// PublishBatch is Publish that says how many of msgs, from the first,
// the broker took (see [BatchPublisher]).
func (e *Embedded) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	for i, msg := range msgs {
		if len(msg.Payload) > e.cfg.MaxPayload {
			return i, fmt.Errorf("fxbus: the embedded broker: message %s to %q: its payload of %d bytes is above the limit of %d bytes (EmbeddedConfig.MaxPayload)",
				msg.UUID, topic, len(msg.Payload), e.cfg.MaxPayload)
		}
		if err := e.publish(topic, msg); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// errNoSubscriber is the error of a publish to a topic that no
// subscription in the process consumes.
type errNoSubscriber struct{ topic string }

func (e *errNoSubscriber) Error() string {
	return fmt.Sprintf("fxbus: the in-process broker has no subscriber to %q in this process, and keeps nothing: not published", e.topic)
}

func (e *Embedded) publish(topic string, msg *message.Message) error {
	md := make(message.Metadata, len(msg.Metadata))
	for k, v := range msg.Metadata {
		md[k] = v
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errEmbeddedClosed
	}
	t := e.topics[topic]
	if t == nil || !t.live() {
		return &errNoSubscriber{topic: topic}
	}
	t.seq++
	ent := &entry{seq: t.seq, id: msg.UUID, payload: msg.Payload, metadata: md, key: md.Get(MetadataKey)}
	took := 0
	for _, g := range t.sorted() {
		for len(g.pending) >= e.cfg.Queue && !g.gone() {
			switch {
			case e.closed:
				return errEmbeddedClosed
			case g.subs == 0:
				return fmt.Errorf("fxbus: the embedded broker: the consumer group %q of %q has no subscription and holds %d messages, its most: not published", g.name, topic, len(g.pending))
			}
			g.cond.Wait()
		}
		if g.gone() {
			continue
		}
		g.pending = append(g.pending, ent)
		g.cond.Broadcast()
		took++
	}
	if took == 0 { // every subscription ended while the publish waited
		return &errNoSubscriber{topic: topic}
	}
	return nil
}

// Subscribe is SubscribeFlow with an InFlight of EmbeddedConfig.InFlight.
func (e *Embedded) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return e.SubscribeFlow(ctx, topic, Flow{InFlight: e.cfg.InFlight})
}

// SubscribeFlow consumes topic in the broker's default consumer group
// (the one Group("default") names), under flow, until ctx ends or the
// broker closes.
func (e *Embedded) SubscribeFlow(ctx context.Context, topic string, flow Flow) (<-chan *message.Message, error) {
	return e.subscribe(ctx, topic, DefaultEmbeddedGroup, flow)
}

// DefaultEmbeddedGroup is the consumer group of an [Embedded] broker's own
// subscriptions.
const DefaultEmbeddedGroup = "default"

// Group returns the consumer group name of the broker: its subscriptions
// share the group's messages, and the group keeps them between its
// subscriptions (see Embedded).
func (e *Embedded) Group(name string) *EmbeddedGroup {
	return &EmbeddedGroup{Embedded: e, name: name}
}

// EmbeddedGroup is a consumer group of an [Embedded] broker: a publisher
// and a subscriber, as a service's replica on a broker has. Close ends
// the subscriptions made through it, not the broker.
type EmbeddedGroup struct {
	*Embedded
	name string

	mu     sync.Mutex
	cancel []context.CancelFunc
	closed bool
}

// Subscribe is SubscribeFlow with an InFlight of EmbeddedConfig.InFlight.
func (g *EmbeddedGroup) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return g.SubscribeFlow(ctx, topic, Flow{InFlight: g.cfg.InFlight})
}

// SubscribeFlow consumes topic in the group, under flow, until ctx ends,
// the group closes or the broker does.
func (g *EmbeddedGroup) SubscribeFlow(ctx context.Context, topic string, flow Flow) (<-chan *message.Message, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, fmt.Errorf("fxbus: the embedded broker's consumer group %q: closed", g.name)
	}
	ctx, cancel := context.WithCancel(ctx)
	out, err := g.subscribe(ctx, topic, g.name, flow)
	if err != nil {
		cancel()
		return nil, err
	}
	g.cancel = append(g.cancel, cancel)
	return out, nil
}

// Close ends the subscriptions made through g: their unacknowledged
// messages go back to the group.
func (g *EmbeddedGroup) Close() error {
	g.mu.Lock()
	g.closed = true
	cancels := g.cancel
	g.cancel = nil
	g.mu.Unlock()
	for _, c := range cancels {
		c()
	}
	return nil
}

// memTopic is a topic's consumer groups.
type memTopic struct {
	seq    uint64               // the last message's number
	groups map[string]*memGroup // by name; a subscription's own group has a name of its own
}

func (t *memTopic) live() bool {
	for _, g := range t.groups {
		if g.subs > 0 {
			return true
		}
	}
	return false
}

// sorted returns the groups, in an order every publish takes (two
// publishers wait for room in the same order).
func (t *memTopic) sorted() []*memGroup {
	out := make([]*memGroup, 0, len(t.groups))
	for _, g := range t.groups {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *memGroup) int { return cmp.Compare(a.name, b.name) })
	return out
}

// memGroup is a consumer group of a topic: the messages it holds, in
// publish order, and those handed over.
type memGroup struct {
	name    string
	cond    *sync.Cond // on Embedded.mu: a change to pending, busy, subs
	pending []*entry   // waiting to be handed over, by seq
	out     []*handed  // handed over and not settled
	busy    map[string]int
	subs    int  // live subscriptions
	own     bool // a subscription's own group: it ends with it
	removed bool // an own group, after its subscription ended
}

// gone says that g takes no more messages: an own group whose
// subscription ended.
func (g *memGroup) gone() bool { return g.removed || (g.own && g.subs == 0) }

// entry is a published message, as a group holds it.
type entry struct {
	seq      uint64
	id       string
	payload  []byte
	metadata message.Metadata
	key      string
}

// handed is an entry handed over to one subscription.
type handed struct {
	ent       *entry
	sub       *memSub
	reclaimed chan struct{} // closed when the group took it back without its ack
}

// memSub is a subscription.
type memSub struct {
	group *memGroup
	flow  Flow
	ctx   context.Context
	ended bool // ctx ended or the broker closed: hand nothing more over
	out   chan *message.Message

	sending   int  // workers between taking a message and handing it over
	outClosed bool // out is closed: once ended and none is sending
}

// closeOut closes s's channel once it ended and no worker is about to
// send on it: a worker that waits for a message's ack does not hold it
// open, so that a consumer that stops acknowledging still sees the
// subscription end. e.mu is held.
func (s *memSub) closeOut() {
	if s.ended && s.sending == 0 && !s.outClosed {
		s.outClosed = true
		close(s.out)
	}
}

func (e *Embedded) subscribe(ctx context.Context, topic, group string, flow Flow) (<-chan *message.Message, error) {
	if err := e.CheckTopic(topic); err != nil {
		return nil, err
	}
	if flow.InFlight <= 0 {
		flow.InFlight = e.cfg.InFlight
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errEmbeddedClosed
	}
	t := e.topics[topic]
	if t == nil {
		t = &memTopic{groups: map[string]*memGroup{}}
		e.topics[topic] = t
	}
	own := group == "" // a subscription of a bus on the process's broker
	if own {
		group = fmt.Sprintf("\x00subscription %d", ownGroups.Add(1))
	}
	g := t.groups[group]
	if g == nil {
		g = &memGroup{name: group, cond: sync.NewCond(&e.mu), busy: map[string]int{}, own: own}
		t.groups[group] = g
	}
	if g.subs == 0 {
		g.reclaim() // a restart: what the ended subscriptions held comes back first
	}
	g.subs++
	s := &memSub{group: g, flow: flow, ctx: ctx, out: make(chan *message.Message)}
	var workers sync.WaitGroup
	workers.Add(flow.InFlight)
	e.wg.Add(flow.InFlight + 1)
	for range flow.InFlight {
		go func() {
			defer e.wg.Done()
			defer workers.Done()
			e.work(s)
		}()
	}
	stop := context.AfterFunc(ctx, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.end(s)
	})
	go func() {
		defer e.wg.Done()
		workers.Wait()
		stop()
		e.mu.Lock()
		defer e.mu.Unlock()
		e.end(s) // the broker closed
		s.sending = 0
		s.closeOut()
		if own {
			g.removed = true
			delete(t.groups, group)
			g.cond.Broadcast()
		}
		if len(t.groups) == 0 && e.topics[topic] == t {
			delete(e.topics, topic)
		}
	}()
	return s.out, nil
}

// ownGroups numbers the groups of subscriptions of their own.
var ownGroups atomic.Uint64

// end marks s ended, once; e.mu is held.
func (e *Embedded) end(s *memSub) {
	if s.ended {
		return
	}
	s.ended = true
	s.group.subs--
	s.group.cond.Broadcast()
	s.closeOut()
}

// reclaim takes back, in their place, the messages handed over to ended
// subscriptions and not settled: their late acks count for nothing.
func (g *memGroup) reclaim() {
	for _, h := range g.out {
		close(h.reclaimed)
		g.putBack(h.ent)
	}
	g.out = nil
	clear(g.busy)
}

// putBack puts ent back among the pending messages, in its place: before
// the first that was published after it (the ones put back are near the
// front).
func (g *memGroup) putBack(ent *entry) {
	i := slices.IndexFunc(g.pending, func(p *entry) bool { return p.seq > ent.seq })
	if i < 0 {
		i = len(g.pending)
	}
	g.pending = slices.Insert(g.pending, i, ent)
}

// work is one of s's InFlight places: it hands one message over at a
// time and waits for its ack or nack.
func (e *Embedded) work(s *memSub) {
	for {
		h := e.next(s)
		if h == nil {
			return
		}
		msg := message.NewMessage(h.ent.id, h.ent.payload)
		for k, v := range h.ent.metadata {
			msg.Metadata[k] = v
		}
		// The message outlives its subscription's context: a consumer that
		// stops finishes what it holds (a bus's Stop waits for it).
		msg.SetContext(context.WithoutCancel(s.ctx))
		select {
		case s.out <- msg:
			e.sent(s)
		case <-s.ctx.Done():
			e.sent(s)
			e.settle(h, false)
			continue // next returns nil: s ended
		case <-e.done:
			return
		}
		select {
		case <-msg.Acked():
			e.settle(h, true)
		case <-msg.Nacked():
			e.settle(h, false)
		case <-h.reclaimed:
		case <-e.done:
			return
		}
	}
}

// next waits for the next message s may take: the first pending one
// (with InOrder, the first whose key has none handed over), or nil once s
// ended.
func (e *Embedded) next(s *memSub) *handed {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := s.group
	for {
		if s.ended || e.closed || s.ctx.Err() != nil {
			return nil
		}
		for i, ent := range g.pending {
			if s.flow.InOrder && ent.key != "" && g.busy[ent.key] > 0 {
				continue
			}
			g.pending = slices.Delete(g.pending, i, i+1)
			if ent.key != "" {
				g.busy[ent.key]++
			}
			h := &handed{ent: ent, sub: s, reclaimed: make(chan struct{})}
			g.out = append(g.out, h)
			s.sending++
			g.cond.Broadcast() // room for a publish
			return h
		}
		g.cond.Wait()
	}
}

// sent says that a worker of s is no longer about to send.
func (e *Embedded) sent(s *memSub) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s.sending--
	s.closeOut()
}

// settle ends h's hand-over: acknowledged, it is done; nacked (or not
// taken), it goes back in its place, before its key's later messages.
func (e *Embedded) settle(h *handed, acked bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := h.sub.group
	i := slices.Index(g.out, h)
	if i < 0 {
		return // reclaimed
	}
	g.out = slices.Delete(g.out, i, i+1)
	if k := h.ent.key; k != "" {
		if g.busy[k]--; g.busy[k] <= 0 {
			delete(g.busy, k)
		}
	}
	if !acked && !g.removed {
		g.putBack(h.ent)
	}
	g.cond.Broadcast()
}

// The in-process broker of the buses given none: one per process, shared
// by every such bus, so that two applications in one binary reach each
// other. It is made when the first such bus is and closed when the last
// one lets go of it.
var inProcess struct {
	mu     sync.Mutex
	broker *Embedded
	users  int
}

// embedded is one bus's hold on the in-process broker: its publisher and
// subscriber.
type embedded struct {
	once     sync.Once
	released atomic.Bool // Close ran: this bus no longer holds the broker
	b        *Embedded
}

func acquireEmbedded() *embedded {
	inProcess.mu.Lock()
	defer inProcess.mu.Unlock()
	if inProcess.users == 0 {
		inProcess.broker = NewEmbedded(EmbeddedConfig{})
	}
	inProcess.users++
	return &embedded{b: inProcess.broker}
}

// errReleased is the error of a bus's publish or subscribe on the
// in-process broker after the bus stopped (the mediator, which stops
// after the bus, may still forward).
var errReleased = errors.New("fxbus: the in-process broker: this bus has stopped")

func (e *embedded) broker() (*Embedded, error) {
	if e.released.Load() {
		return nil, errReleased
	}
	return e.b, nil
}

// Capabilities says what the in-process broker does.
func (e *embedded) Capabilities() Capabilities { return e.b.Capabilities() }

// CheckTopic refuses an empty topic only.
func (e *embedded) CheckTopic(topic string) error { return e.b.CheckTopic(topic) }

// Publish publishes to the in-process broker, as a bus forwards: a message
// to a topic nothing in the process subscribes to is dropped, as it always
// was (without the outbox, a routed event nobody consumes goes nowhere).
func (e *embedded) Publish(topic string, msgs ...*message.Message) error {
	b, err := e.broker()
	if err != nil {
		return err
	}
	for _, msg := range msgs {
		if err := b.Publish(topic, msg); err != nil && !errors.As(err, new(*errNoSubscriber)) {
			return err
		}
	}
	return nil
}

// Subscribe subscribes to the in-process broker, in a consumer group of
// the subscription's own.
func (e *embedded) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return e.SubscribeFlow(ctx, topic, Flow{InFlight: e.b.cfg.InFlight})
}

// SubscribeFlow subscribes to the in-process broker under flow, in a
// consumer group of the subscription's own, so that every bus of the
// process that subscribes to a topic gets each of its messages.
func (e *embedded) SubscribeFlow(ctx context.Context, topic string, flow Flow) (<-chan *message.Message, error) {
	b, err := e.broker()
	if err != nil {
		return nil, err
	}
	return b.subscribe(ctx, topic, "", flow) // a group of its own: every bus gets every message
}

// Close lets go of the in-process broker; the last bus to let go closes it.
func (e *embedded) Close() error {
	var err error
	e.once.Do(func() {
		e.released.Store(true)
		inProcess.mu.Lock()
		defer inProcess.mu.Unlock()
		if inProcess.users--; inProcess.users == 0 {
			err = inProcess.broker.Close()
			inProcess.broker = nil
		}
	})
	return err
}

// delivering is the in-process broker as Bus.Publisher gives it: it
// refuses a topic that nothing in the process subscribes to, since the
// broker keeps nothing, while a relay that publishes through it would
// delete its row as sent. The row waits instead, retried, until a
// subscriber is there.
type delivering struct{ *embedded }

// Publish publishes when topic has a subscriber in the process.
func (d delivering) Publish(topic string, msgs ...*message.Message) error {
	_, err := d.PublishBatch(topic, msgs)
	return err
}

// PublishBatch publishes msgs in order while topic has a subscriber in
// the process, and says how many it took.
func (d delivering) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	b, err := d.broker()
	if err != nil {
		return 0, err
	}
	return b.PublishBatch(topic, msgs)
}
