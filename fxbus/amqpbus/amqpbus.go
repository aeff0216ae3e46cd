// Package amqpbus is RabbitMQ for fxbus: watermill-amqp with the settings
// a service needs. It is a package of its own so that only its users
// compile the AMQP client.
//
//	ps, err := amqpbus.New(amqpbus.Config{URL: "amqp://guest:guest@127.0.0.1:5672/", Group: "billing"})
//	fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber))))
//
// What it chooses:
//   - Publish waits for RabbitMQ's publisher confirm of each message, on a
//     pool of channels opened once (a relay that deletes a row once the
//     publish returned never deletes one RabbitMQ did not take), and marks
//     messages persistent. PublishBatch (what the outbox's relay uses, as
//     an fxbus.BatchPublisher) sends a whole batch on a confirm-mode
//     channel before it waits for the confirms.
//   - Each topic is a durable fanout exchange; each service (Group) has a
//     durable queue on it, named topic_group, which its replicas share;
//     every service gets every message. A fanout exchange drops what no
//     queue is bound to yet: Subscribe binds the service's queue, and
//     [Provision] binds it ahead, before anything is published, in one
//     call per service.
//   - Consumers acknowledge manually; a nacked message is requeued.
//     Prefetch bounds what RabbitMQ hands a consumer before its acks.
//   - New connects, and fails naming the address (without its password)
//     when RabbitMQ cannot be reached.
package amqpbus

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/preset"
	"go.uber.org/fx"
)

// Config configures a PubSub. URL and Group are required.
type Config struct {
	// URL is RabbitMQ's, such as amqp://guest:guest@127.0.0.1:5672/.
	URL string
	// Group names the service: its durable queue on each topic, which
	// its replicas share.
	Group string
	// Prefetch bounds the messages RabbitMQ hands one consumer before
	// they are acknowledged. Default 16; 1 keeps a queue's order for one
	// consumer.
	Prefetch int
	// Channels is the size of the publisher's channel pool. Default 8.
	Channels int
	// Logger is Watermill's. Default: none.
	Logger watermill.LoggerAdapter
}

// PubSub publishes to and subscribes on RabbitMQ.
type PubSub struct {
	cfg   Config
	pub   *wamqp.Publisher
	sub   *wamqp.Subscriber
	batch batchChannel
}

var (
	_ message.Publisher  = (*PubSub)(nil)
	_ message.Subscriber = (*PubSub)(nil)
)

func (c Config) pubsubConfig() wamqp.Config {
	cfg := wamqp.NewDurablePubSubConfig(c.URL, wamqp.GenerateQueueNameTopicNameWithSuffix(c.Group))
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.ChannelPoolSize = c.Channels
	cfg.Consume.Qos.PrefetchCount = c.Prefetch
	return cfg
}

// Module is the preset under fx, one line in an application:
//
//	fx.New(fxcqrs.Module, fxbus.Module,
//		amqpbus.Module(amqpbus.Config{URL: "amqp://guest:guest@127.0.0.1:5672/", Group: "billing"}),
//		…)
//
// It makes the PubSub with New as the graph is built (fx.New fails with
// New's error), gives it to fxbus as the message.Publisher and the
// message.Subscriber (and provides the *PubSub itself), and closes it
// when the application stops, after the bus has stopped consuming.
// Without fx, call New and give the PubSub to fxbus.Config.
func Module(cfg Config) fx.Option {
	return preset.Module("amqpbus", func() (*PubSub, error) { return New(cfg) })
}

// New connects to RabbitMQ and returns a PubSub on it.
func New(cfg Config) (*PubSub, error) {
	if cfg.URL == "" || cfg.Group == "" {
		return nil, errors.New("amqpbus: Config.URL and Config.Group are required")
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 16
	}
	if cfg.Channels <= 0 {
		cfg.Channels = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = watermill.NopLogger{}
	}
	pub, err := wamqp.NewPublisher(cfg.pubsubConfig(), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("amqpbus: RabbitMQ at %s cannot be reached: %w", redacted(cfg.URL), err)
	}
	sub, err := wamqp.NewSubscriber(cfg.pubsubConfig(), cfg.Logger)
	if err != nil {
		_ = pub.Close()
		return nil, fmt.Errorf("amqpbus: RabbitMQ at %s cannot be reached: %w", redacted(cfg.URL), err)
	}
	return &PubSub{cfg: cfg, pub: pub, sub: sub, batch: batchChannel{url: cfg.URL}}, nil
}

// Publish publishes msgs to topic, each confirmed by RabbitMQ.
func (p *PubSub) Publish(topic string, msgs ...*message.Message) error {
	return p.pub.Publish(topic, msgs...)
}

// Subscribe consumes the Group's queue on topic, declaring and binding it
// if it does not exist.
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return p.sub.Subscribe(ctx, topic)
}

// Close closes the subscriber, then the publishers.
func (p *PubSub) Close() error {
	p.batch.close()
	return errors.Join(p.sub.Close(), p.pub.Close())
}

// Provision declares each topic's exchange and the Group's queue bound to
// it, as Subscribe would, so that what is published before the service
// first subscribes waits in its queue.
func (p *PubSub) Provision(topics ...string) error {
	for _, topic := range topics {
		if err := p.sub.SubscribeInitialize(topic); err != nil {
			return fmt.Errorf("amqpbus: provision %s for %s: %w", topic, p.cfg.Group, err)
		}
	}
	return nil
}

// redacted is u without its password.
func redacted(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(an unparsable URL)"
	}
	return parsed.Redacted()
}
