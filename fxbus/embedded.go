package fxbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// The in-process broker: one Watermill GoChannel per process, shared by
// every bus in it that was given no broker, so that two applications in
// one binary reach each other. It is made when the first such bus is and
// closed when the last one stops.
var inProcess struct {
	mu    sync.Mutex
	gc    *gochannel.GoChannel
	users int
	subs  map[string]int // live subscriptions by topic
}

// embedded is one bus's hold on the in-process broker.
type embedded struct {
	once     sync.Once
	released atomic.Bool // Close ran: this bus no longer holds the broker
}

func acquireEmbedded(log watermill.LoggerAdapter) *embedded {
	inProcess.mu.Lock()
	defer inProcess.mu.Unlock()
	if inProcess.users == 0 {
		inProcess.gc = gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64}, log)
		inProcess.subs = map[string]int{}
	}
	inProcess.users++
	return &embedded{}
}

// errReleased is the error of a bus's publish or subscribe on the
// in-process broker after the bus stopped (the mediator, which stops
// after the bus, may still forward).
var errReleased = errors.New("fxbus: the in-process broker: this bus has stopped")

func (e *embedded) broker() (*gochannel.GoChannel, error) {
	if e.released.Load() {
		return nil, errReleased
	}
	inProcess.mu.Lock()
	defer inProcess.mu.Unlock()
	return inProcess.gc, nil
}

// Publish publishes to the shared GoChannel.
func (e *embedded) Publish(topic string, msgs ...*message.Message) error {
	gc, err := e.broker()
	if err != nil {
		return err
	}
	return gc.Publish(topic, msgs...)
}

// Subscribe subscribes to the shared GoChannel, counting the topic's live
// subscriptions for delivering.
func (e *embedded) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	gc, err := e.broker()
	if err != nil {
		return nil, err
	}
	in, err := gc.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	inProcess.mu.Lock()
	inProcess.subs[topic]++
	inProcess.mu.Unlock()
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		defer func() {
			inProcess.mu.Lock()
			inProcess.subs[topic]--
			inProcess.mu.Unlock()
		}()
		for msg := range in {
			out <- msg
		}
	}()
	return out, nil
}

// Close lets go of the in-process broker; the last bus to let go closes it.
func (e *embedded) Close() error {
	var err error
	e.once.Do(func() {
		e.released.Store(true)
		inProcess.mu.Lock()
		defer inProcess.mu.Unlock()
		if inProcess.users--; inProcess.users == 0 {
			err = inProcess.gc.Close()
			inProcess.gc = nil
		}
	})
	return err
}

// delivering is the in-process broker as Bus.Publisher gives it: it
// refuses a topic that nothing in the process subscribes to, since the
// GoChannel would drop the message, while a relay that publishes through
// it would delete its row as sent. The row waits instead, retried, until
// a subscriber is there.
type delivering struct{ *embedded }

// Publish publishes when topic has a subscriber in the process.
func (d delivering) Publish(topic string, msgs ...*message.Message) error {
	inProcess.mu.Lock()
	n := inProcess.subs[topic]
	inProcess.mu.Unlock()
	if n == 0 {
		return fmt.Errorf("fxbus: the in-process broker has no subscriber to %q in this process, and keeps nothing: not published", topic)
	}
	return d.embedded.Publish(topic, msgs...)
}
