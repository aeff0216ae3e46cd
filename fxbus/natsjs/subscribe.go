package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
)

// Subscribe joins the Group's durable consumer on topic, provisioning the
// stream and the consumer when they do not exist. The channel closes when
// ctx ends or the PubSub closes, after every callback in flight returned.
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if p.cfg.Group == "" {
		return nil, errors.New("natsjs: Subscribe needs Config.Group, the name of the service's durable consumer")
	}
	if err := p.provision(topic); err != nil {
		return nil, err
	}
	s := &subscription{out: make(chan *message.Message), closing: make(chan struct{}), ackWait: p.cfg.AckWait}
	sub, err := p.js.QueueSubscribe(topic, p.cfg.Group, s.deliver,
		nats.Bind(topic, p.cfg.Group), nats.ManualAck())
	if err != nil {
		return nil, fmt.Errorf("natsjs: subscribe to %s: %w", topic, err)
	}
	s.sub = sub
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.close()
		return nil, errors.New("natsjs: closed")
	}
	p.subs[s] = struct{}{}
	p.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.closing:
		}
		s.close()
		p.mu.Lock()
		delete(p.subs, s)
		p.mu.Unlock()
	}()
	return s.out, nil
}

// subscription is one Subscribe: its NATS subscription and its channel.
type subscription struct {
	sub      *nats.Subscription
	ackWait  time.Duration
	out      chan *message.Message
	inFlight sync.WaitGroup // callbacks between entry and return
	closing  chan struct{}  // closed by close: callbacks stop waiting
	once     sync.Once
	mu       sync.Mutex // guards closed against deliver's Add
	closed   bool
}

// deliver is the NATS callback: it hands the message over and returns, so
// that the next message of the subscription can be handed over while this
// one is handled (nats.go runs one subscription's callbacks one after
// another: waiting here for the ack would process a topic one message at
// a time, whatever fxbus.InFlight says). A goroutine waits for its ack or
// nack, at most AckWait (after which JetStream redelivers it anyway). A
// message not yet handed over when the subscription closes is nacked;
// one handed over is waited for, so that closing never redelivers a
// message whose handler is still running. The consumer's bound on
// messages in flight is fxbus's (InFlight): while it is reached, the bus
// reads no more, this callback waits to hand the next one over, and
// JetStream keeps the rest.
func (s *subscription) deliver(m *nats.Msg) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = m.Nak()
		return
	}
	s.inFlight.Add(1)
	s.mu.Unlock()

	id := messageID(m.Header.Get(nats.MsgIdHdr))
	msg := message.NewMessage(id, m.Data)
	for k, v := range m.Header {
		if k != nats.MsgIdHdr && len(v) > 0 {
			msg.Metadata.Set(k, v[0])
		}
	}
	select {
	case s.out <- msg:
	case <-s.closing:
		_ = m.Nak()
		s.inFlight.Done()
		return
	}
	go func() {
		defer s.inFlight.Done()
		t := time.NewTimer(s.ackWait)
		defer t.Stop()
		select {
		case <-msg.Acked():
			_ = m.Ack()
		case <-msg.Nacked():
			_ = m.Nak()
		case <-t.C: // JetStream redelivers it
		}
	}()
}

// close unsubscribes, waits for the callbacks in flight, then closes the
// channel: nothing sends on it after.
func (s *subscription) close() {
	s.once.Do(func() {
		_ = s.sub.Unsubscribe()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		s.inFlight.Wait()
		close(s.out)
	})
}
