// Package redisbus is Redis Streams for fxbus: watermill-redisstream with
// the settings a service needs. It is a package of its own so that only
// its users compile the Redis client.
//
//	ps, err := redisbus.New(redisbus.Config{Addr: "127.0.0.1:6379", Group: "billing"})
//	fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber))))
//
// What it chooses:
//   - Each topic is a stream; each service (Group) a consumer group on it,
//     created to read from the stream's first entry, so that what was
//     published before the service first subscribed is not skipped. Every
//     service gets every message; a service's replicas share its group.
//   - Each replica is a consumer of its own (a random name per process);
//     a message a dead replica held unacknowledged is claimed by another
//     after MaxIdleTime. A nacked message is delivered again.
//   - Streams are not trimmed: trimming can drop entries a group has not
//     read. Trim them yourself (XTRIM) once every group has read them.
//   - Publish returns once Redis has taken the entry; what Redis keeps
//     across its own restart is its persistence settings' (AOF), not
//     this package's.
//   - New pings Redis, and fails naming the address when it cannot be
//     reached.
package redisbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/preset"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"
)

// Config configures a PubSub. Group is required to subscribe.
type Config struct {
	// Addr is Redis's host:port. Default 127.0.0.1:6379.
	Addr string
	// Options are the client's, beside Addr (a password, TLS); Addr wins.
	Options redis.Options
	// Group names the service: its consumer group on each topic.
	Group string
	// MaxIdleTime is how long a message may stay unacknowledged with a
	// consumer before another replica claims it. Default 30s.
	MaxIdleTime time.Duration
	// Logger is Watermill's. Default: none.
	Logger watermill.LoggerAdapter
}

// PubSub publishes to and subscribes on Redis Streams.
type PubSub struct {
	client *redis.Client
	pub    *redisstream.Publisher
	sub    *redisstream.Subscriber // nil without a Group
}

var (
	_ message.Publisher  = (*PubSub)(nil)
	_ message.Subscriber = (*PubSub)(nil)
)

// Module is the preset under fx, one line in an application:
//
//	fx.New(fxcqrs.Module, fxbus.Module,
//		redisbus.Module(redisbus.Config{Addr: "127.0.0.1:6379", Group: "billing"}),
//		…)
//
// It makes the PubSub with New as the graph is built (fx.New fails with
// New's error), gives it to fxbus as the message.Publisher and the
// message.Subscriber (and provides the *PubSub itself), and closes it
// when the application stops, after the bus has stopped consuming.
// Without fx, call New and give the PubSub to fxbus.Config.
func Module(cfg Config) fx.Option {
	return preset.Module("redisbus", func() (*PubSub, error) { return New(cfg) })
}

// New connects to Redis and returns a PubSub on it.
func New(cfg Config) (*PubSub, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:6379"
	}
	if cfg.MaxIdleTime <= 0 {
		cfg.MaxIdleTime = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = watermill.NopLogger{}
	}
	opts := cfg.Options
	opts.Addr = cfg.Addr
	client := redis.NewClient(&opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redisbus: Redis at %s cannot be reached: %w", cfg.Addr, err)
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client: client, Marshaller: redisstream.DefaultMarshallerUnmarshaller{},
	}, cfg.Logger)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redisbus: %w", err)
	}
	ps := &PubSub{client: client, pub: pub}
	if cfg.Group != "" {
		ps.sub, err = redisstream.NewSubscriber(redisstream.SubscriberConfig{
			Client:        client,
			Unmarshaller:  redisstream.DefaultMarshallerUnmarshaller{},
			ConsumerGroup: cfg.Group,
			Consumer:      cfg.Group + "-" + uuid.NewString(),
			OldestId:      "0", // a new group reads the stream from its first entry
			MaxIdleTime:   cfg.MaxIdleTime,
			// A closed client ends the reading at once (else it logs and
			// sleeps half a second per attempt, outliving Close).
			ShouldStopOnReadErrors: func(err error) bool {
				return errors.Is(err, redis.ErrClosed) || errors.Is(err, context.Canceled)
			},
		}, cfg.Logger)
		if err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("redisbus: %w", err)
		}
	}
	return ps, nil
}

// Publish appends msgs to topic's stream, in order.
func (p *PubSub) Publish(topic string, msgs ...*message.Message) error {
	return p.pub.Publish(topic, msgs...)
}

// Subscribe reads topic's stream in the Group's consumer group.
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if p.sub == nil {
		return nil, errors.New("redisbus: Subscribe needs Config.Group, the name of the service's consumer group")
	}
	return p.sub.Subscribe(ctx, topic)
}

// Close closes the subscriber, the publisher and their client (each of
// watermill-redisstream's closes the client it was given: the second
// finds it closed).
func (p *PubSub) Close() error {
	var errs []error
	if p.sub != nil {
		errs = append(errs, p.sub.Close())
	}
	errs = append(errs, p.pub.Close(), p.client.Close())
	for i, err := range errs {
		if errors.Is(err, redis.ErrClosed) {
			errs[i] = nil
		}
	}
	return errors.Join(errs...)
}
