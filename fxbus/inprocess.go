package fxbus

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
)

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
