// Package natsjs is NATS JetStream for fxbus, on the official client
// (nats.go): a Watermill publisher and subscriber with the settings a
// service needs and nothing to choose wrong. It is a package of its own so
// that only its users compile the NATS client.
//
//	ps, err := natsjs.New(natsjs.Config{URL: "nats://127.0.0.1:4222", Group: "billing"})
//	fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber))))
//
// What it chooses:
//   - Publish waits for JetStream's acknowledgement of each message and
//     sets Nats-Msg-Id to the message's id, so that JetStream drops a
//     duplicate published again within the stream's duplicate window (a
//     relay that was killed between publish and delete).
//   - Subscribe provisions a stream per topic (named as the topic, which
//     NATS requires to hold no dot, space or wildcard) and, per topic, a
//     durable consumer named after Group with explicit acknowledgement,
//     which every replica of the service joins as a queue subscriber:
//     each message goes to one replica, and one that dies has its
//     unacknowledged messages redelivered after AckWait. Replicas only
//     join: the consumer outlives every subscription.
//   - A message is acknowledged when the handler acks it, negatively
//     acknowledged (redelivered at once) when it nacks it. The next is
//     handed over before then: a topic is handled fxbus.InFlight messages
//     at a time (InFlight(1): in order), not one at a time. Closing a
//     subscription unsubscribes first, waits for the callbacks in flight,
//     and only then closes the channel: no callback sends on a closed
//     channel (the close race of watermill-nats's subscriber).
//   - New connects, and fails naming the address when NATS cannot be
//     reached: a service fails at start, not at its first message.
//
// Metadata travels as NATS headers, the payload as the message's data:
// a consumer in another language reads both.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/preset"
	"github.com/nats-io/nats.go"
	"go.uber.org/fx"
)

// Config configures a PubSub. Group is required to subscribe.
type Config struct {
	// URL is the NATS server's. Default nats.DefaultURL
	// (nats://127.0.0.1:4222).
	URL string
	// Options are the connection's, beside the URL (credentials, TLS).
	Options []nats.Option
	// Group names the service: its durable consumer on each topic, which
	// its replicas share. Required to subscribe.
	Group string
	// AckWait is how long JetStream waits for a message's
	// acknowledgement before it redelivers it. Default 30s.
	AckWait time.Duration
	// MaxDeliver bounds how often JetStream delivers a message. Default
	// unbounded (-1): fxbus dead-letters a message that keeps failing.
	MaxDeliver int
}

// PubSub publishes to and subscribes on NATS JetStream.
type PubSub struct {
	cfg  Config
	conn *nats.Conn
	js   nats.JetStreamContext

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
}

var (
	_ message.Publisher  = (*PubSub)(nil)
	_ message.Subscriber = (*PubSub)(nil)
)

// Module is the preset under fx, one line in an application:
//
//	fx.New(fxcqrs.Module, fxbus.Module,
//		natsjs.Module(natsjs.Config{URL: "nats://127.0.0.1:4222", Group: "billing"}),
//		…)
//
// It makes the PubSub with New as the graph is built (fx.New fails with
// New's error), gives it to fxbus as the message.Publisher and the
// message.Subscriber (and provides the *PubSub itself), and closes it
// when the application stops, after the bus has stopped consuming.
// Without fx, call New and give the PubSub to fxbus.Config.
func Module(cfg Config) fx.Option {
	return preset.Module("natsjs", func() (*PubSub, error) { return New(cfg) })
}

// New connects to NATS and returns a PubSub on it.
func New(cfg Config) (*PubSub, error) {
	if cfg.URL == "" {
		cfg.URL = nats.DefaultURL
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = -1
	}
	conn, err := nats.Connect(cfg.URL, cfg.Options...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: NATS at %s cannot be reached: %w", cfg.URL, err)
	}
	js, err := conn.JetStream()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("natsjs: JetStream at %s: %w", cfg.URL, err)
	}
	if _, err := js.AccountInfo(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("natsjs: JetStream is not enabled at %s (start nats-server with -js): %w", cfg.URL, err)
	}
	return &PubSub{cfg: cfg, conn: conn, js: js, subs: map[*subscription]struct{}{}}, nil
}

// Publish publishes msgs to topic, in order, each acknowledged by
// JetStream before the next is sent.
func (p *PubSub) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		m := natsMsg(topic, msg)
		_, err := p.js.PublishMsg(m)
		if errors.Is(err, nats.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			// No stream takes the subject yet: a producer may start before
			// any consumer. Make it, then publish again.
			if err = p.provisionStream(topic); err == nil {
				_, err = p.js.PublishMsg(m)
			}
		}
		if err != nil {
			return fmt.Errorf("natsjs: publish to %s: %w", topic, err)
		}
	}
	return nil
}

// PublishBatch publishes msgs to topic without waiting on each (JetStream's
// asynchronous publish), then waits for their acknowledgements, and
// returns how many, from the first, JetStream acknowledged: what a relay
// may delete. Messages after the first refused one may have been taken
// too; sent again, JetStream drops them as duplicates within its window.
func (p *PubSub) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	acked, err := p.publishAsync(topic, msgs)
	if acked == 0 && (errors.Is(err, nats.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)) {
		if err = p.provisionStream(topic); err == nil {
			acked, err = p.publishAsync(topic, msgs)
		}
	}
	if err != nil {
		return acked, fmt.Errorf("natsjs: publish to %s: %w", topic, err)
	}
	return acked, nil
}

func (p *PubSub) publishAsync(topic string, msgs []*message.Message) (int, error) {
	futures := make([]nats.PubAckFuture, 0, len(msgs))
	var sendErr error
	for _, msg := range msgs {
		f, err := p.js.PublishMsgAsync(natsMsg(topic, msg))
		if err != nil {
			sendErr = err
			break
		}
		futures = append(futures, f)
	}
	acked, firstErr := 0, error(nil)
	for _, f := range futures { // every future is waited for, the failed ones' too
		select {
		case <-f.Ok():
			if firstErr == nil {
				acked++
			}
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if firstErr == nil {
		firstErr = sendErr
	}
	return acked, firstErr
}

// natsMsg is msg on the wire: its payload as data, its metadata as
// headers, its id as Nats-Msg-Id for JetStream's deduplication.
func natsMsg(topic string, msg *message.Message) *nats.Msg {
	m := nats.NewMsg(topic)
	m.Data = msg.Payload
	for k, v := range msg.Metadata {
		m.Header.Set(k, v)
	}
	m.Header.Set(nats.MsgIdHdr, dedupID(msg.UUID, msg.Metadata.Get(metadataReplay)))
	return m
}

// provision makes topic's stream and the Group's consumer on it, unless
// they exist.
func (p *PubSub) provision(topic string) error {
	if err := p.provisionStream(topic); err != nil {
		return err
	}
	if _, err := p.js.ConsumerInfo(topic, p.cfg.Group); errors.Is(err, nats.ErrConsumerNotFound) {
		_, err = p.js.AddConsumer(topic, &nats.ConsumerConfig{
			Durable:        p.cfg.Group,
			DeliverSubject: nats.NewInbox(),
			DeliverGroup:   p.cfg.Group,
			DeliverPolicy:  nats.DeliverAllPolicy,
			AckPolicy:      nats.AckExplicitPolicy,
			AckWait:        p.cfg.AckWait,
			MaxDeliver:     p.cfg.MaxDeliver,
		})
		if err != nil && !errors.Is(err, nats.ErrConsumerNameAlreadyInUse) {
			return fmt.Errorf("natsjs: consumer %s on %s: %w", p.cfg.Group, topic, err)
		}
	} else if err != nil {
		return fmt.Errorf("natsjs: consumer %s on %s: %w", p.cfg.Group, topic, err)
	}
	return nil
}

// provisionStream makes topic's stream unless it exists.
func (p *PubSub) provisionStream(topic string) error {
	_, err := p.js.StreamInfo(topic)
	if errors.Is(err, nats.ErrStreamNotFound) {
		_, err = p.js.AddStream(&nats.StreamConfig{Name: topic, Subjects: []string{topic}})
		if errors.Is(err, nats.ErrStreamNameAlreadyInUse) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("natsjs: stream %s: %w", topic, err)
	}
	return nil
}

// Close closes every subscription, then the connection.
func (p *PubSub) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	subs := make([]*subscription, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	p.mu.Unlock()
	for _, s := range subs {
		s.close()
	}
	p.conn.Close()
	return nil
}

// Check reports whether the connection to NATS is up, for fxbus's health
// check (fxbus.Bus.Checks): an in-memory look at the client's status.
func (p *PubSub) Check(context.Context) error {
	if s := p.conn.Status(); s != nats.CONNECTED {
		return fmt.Errorf("natsjs: the connection to %s is %v", p.cfg.URL, s)
	}
	return nil
}

// dedupID is the Nats-Msg-Id of a message: its id, for JetStream to drop a
// duplicate publish within its window, and for a replay (see
// fxbus.MetadataReplay) the id and its replay's mark, so that JetStream
// takes the replay as new; messageID takes the mark off again.
func dedupID(id, replay string) string {
	if replay == "" {
		return id
	}
	return id + replaySep + replay
}

const replaySep = "~replay~"

// metadataReplay is fxbus.MetadataReplay (fxbus is not imported here: it
// may import this package).
const metadataReplay = "replay"

// messageID is the message's own id, from its Nats-Msg-Id.
func messageID(hdr string) string {
	id, _, _ := strings.Cut(hdr, replaySep)
	return id
}
