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
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
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

	mu      sync.Mutex
	streams map[string]string   // stream name → the topic CheckTopic let map to it
	ready   map[string]struct{} // topics whose stream is known to exist
	subs    map[*subscription]struct{}
	closed  bool
	closing chan struct{} // closed by Close
}

var (
	_ message.Publisher    = (*PubSub)(nil)
	_ message.Subscriber   = (*PubSub)(nil)
	_ fxbus.Broker         = (*PubSub)(nil)
	_ fxbus.Provisioner    = (*PubSub)(nil)
	_ fxbus.FlowSubscriber = (*PubSub)(nil)
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
	return &PubSub{
		cfg: cfg, conn: conn, js: js,
		streams: map[string]string{}, ready: map[string]struct{}{},
		subs: map[*subscription]struct{}{}, closing: make(chan struct{}),
	}, nil
}

// Capabilities states what the PubSub does: a key's order through a
// nack, a redelivery and a restart (one consuming process at a time),
// parallel consumption, the largest payload (the server's max_payload
// less an allowance for headers: 1 MiB less 8 KiB on a default server)
// and the topic rule (see CheckTopic).
func (p *PubSub) Capabilities() fxbus.Capabilities {
	return fxbus.Capabilities{
		Name:        "nats-jetstream",
		OrderPerKey: true,
		Parallel:    true,
		MaxPayload:  p.maxPayload(),
		TopicRule:   topicRule,
	}
}

// Close stops every subscription (each gives back, in stream order, what
// it holds: a message whose handler still runs is given back too, and a
// replica or the next start has it again), then closes the connection.
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
		s.stop()
	}
	close(p.closing)
	for _, s := range subs {
		s.goroutines.Wait()
	}
	_ = p.conn.FlushTimeout(time.Second) // what was given back reaches the server
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
