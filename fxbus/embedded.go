package fxbus

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
