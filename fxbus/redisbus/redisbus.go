package redisbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/preset"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Config configures a PubSub. Group is required to subscribe.
type Config struct {
	// Addr is Redis's host:port. Default 127.0.0.1:6379.
	Addr string
	// Options are the client's, beside Addr (a password, TLS); Addr wins.
	Options redis.Options
	// Group names the service: its consumer group on each topic.
	Group string
	// Consumer names this replica in the Group: what it holds
	// unacknowledged is recorded under this name, and a replica
	// restarted under the same name takes it back first. It must stay the
	// same across the replica's restarts and differ between replicas
	// running at once: a process holds its name on each topic under a
	// lease in Redis (renewed every second, expiring 3 s after the last
	// renewal), and a subscription under a name a live process holds
	// fails. Default: Group-hostname, or Group-hostname-1, -2, … when a
	// live process of this host holds it on the topic: each replica with
	// a host name of its own (a pod, a VM) keeps one name, and replicas
	// sharing a host take the first free ones (a replica restarted alone
	// gets its own back). A killed process's name is free once its lease
	// expires; its successor waits for that (at most 5 s) to take the
	// name, and its pending entries, back.
	Consumer string
	// MaxIdleTime is how long a message may stay unacknowledged with
	// another consumer of the Group, whose name a process holds, before
	// this one claims it: the consumer is taken for dead. Entries of a
	// name nobody holds are claimed at once. Default 30s.
	MaxIdleTime time.Duration
	// MaxPayload is the largest payload Publish sends, in bytes. Default
	// 512 MiB, Redis's own limit on one value (proto-max-bulk-len).
	MaxPayload int
	// Lanes is how many lanes a topic's keyed messages are spread over,
	// unless TopicLanes says otherwise: 1 by default. With more, each
	// lane is a stream of its own (fxbus.LaneOf; lane 0 is the topic's),
	// and a subscription with fxbus.InOrder shares the lanes with the
	// Group's other replicas, one owner per lane at a time (see the
	// package doc). One figure per topic for every producer and consumer:
	// Provision records it and refuses another.
	Lanes int
	// TopicLanes sets the number of lanes of some topics, by topic.
	TopicLanes map[string]int
	// Lease is how long a replica's lanes stay its own after its last
	// renewal (every Lease/6). Default 3s.
	Lease time.Duration
	// Logger logs what goes wrong with the lanes' leases. Default none.
	Logger *zap.Logger
}

// PubSub publishes to and subscribes on Redis Streams. It is an
// fxbus.Broker, an fxbus.Provisioner and an fxbus.FlowSubscriber.
type PubSub struct {
	cfg    Config
	client *redis.Client
	pub    *redisstream.Publisher
	known  sync.Map // topics whose stream exists

	host string // the default consumer name's

	streamsMu sync.Mutex
	streams   map[*stream]bool // the subscriptions

	leaseMu sync.Mutex
	leases  map[string]lease // by topic: the consumer names this process holds

	closing   chan struct{}
	closeOnce sync.Once
	subs      sync.WaitGroup
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
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 512 << 20
	}
	if err := checkLanes(&cfg); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	host, _ := os.Hostname()
	if cfg.Consumer == "" && cfg.Group != "" && host == "" {
		return nil, errors.New("redisbus: Config.Consumer is not set and the host has no name to make one of")
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
	}, watermill.NopLogger{})
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redisbus: %w", err)
	}
	return &PubSub{cfg: cfg, client: client, pub: pub, host: host, closing: make(chan struct{})}, nil
}

// topicRule is what CheckTopic allows: any key name, but the bus's
// topics are names people type.
const topicRule = "1 to 1024 bytes, no spaces or control characters (a stream's key)"

// Capabilities states what Redis Streams give: a stream's order, kept
// per key under InOrder through nacks and restarts of a consumer (its
// pending entries come back first; with Config.Lanes, across replicas,
// one per lane at a time), InFlight entries at once, and the largest
// payload.
func (p *PubSub) Capabilities() fxbus.Capabilities {
	return fxbus.Capabilities{
		Name:        "redis-streams",
		OrderPerKey: true,
		Parallel:    true,
		MaxPayload:  p.cfg.MaxPayload,
		TopicRule:   topicRule,
	}
}

// CheckTopic says whether topic can name a stream.
func (p *PubSub) CheckTopic(topic string) error {
	ok := topic != "" && len(topic) <= 1024
	for _, r := range topic {
		if r <= ' ' || r == 0x7f {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("redisbus: topic %q is not one Redis Streams take here: %s", topic, topicRule)
	}
	return nil
}

// Provision makes each topic's stream and, with a Group, the Group's
// consumer group on it, reading from the stream's first entry (so that
// what is published before the service first subscribes is read).
// Publish refuses a topic whose stream does not exist.
func (p *PubSub) Provision(ctx context.Context, topics ...string) error {
	for _, topic := range topics {
		if err := p.CheckTopic(topic); err != nil {
			return err
		}
		if err := p.provision(ctx, topic); err != nil {
			return fmt.Errorf("redisbus: provision %s for %q: %w", topic, p.cfg.Group, err)
		}
	}
	return nil
}

func (p *PubSub) provision(ctx context.Context, topic string) error {
	if err := p.checkRecordedLanes(ctx, topic); err != nil {
		return err
	}
	for n := range p.lanesOf(topic) {
		if err := p.provisionStream(ctx, laneStream(topic, n)); err != nil {
			return err
		}
	}
	p.known.Store(topic, true)
	return nil
}

// provisionStream makes the stream key and the Group's consumer group on
// it.
func (p *PubSub) provisionStream(ctx context.Context, topic string) error {
	group := p.cfg.Group
	if group == "" { // a stream without a group: made with a group of its own, dropped
		group = "fxbus-provision"
	}
	err := p.client.XGroupCreateMkStream(ctx, topic, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	if p.cfg.Group == "" && err == nil {
		if err := p.client.XGroupDestroy(ctx, topic, group).Err(); err != nil {
			return err
		}
	}
	p.known.Store(topic, true)
	return nil
}

// ErrNotProvisioned is returned (wrapped, naming the topic) by a publish
// to a topic whose stream does not exist.
var ErrNotProvisioned = errors.New("the topic is not provisioned (no stream of its name: Provision makes it)")

// Publish appends msgs to topic's stream, in order. A topic whose stream
// does not exist fails, naming it (XADD would make one nobody reads).
func (p *PubSub) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		if len(msg.Payload) > p.cfg.MaxPayload {
			return fmt.Errorf("redisbus: publish to %s: message %s has a payload of %d bytes, above MaxPayload, %d", topic, msg.UUID, len(msg.Payload), p.cfg.MaxPayload)
		}
	}
	if _, ok := p.known.Load(topic); !ok {
		n, err := p.client.Exists(context.Background(), topic).Result()
		if err != nil {
			return fmt.Errorf("redisbus: publish to %s: %w", topic, err)
		}
		if n == 0 {
			return fmt.Errorf("redisbus: publish to %s: %w", topic, ErrNotProvisioned)
		}
		p.known.Store(topic, true)
	}
	if p.lanesOf(topic) > 1 {
		for _, msg := range msgs { // each to its lane's stream, in order
			if err := p.pub.Publish(p.streamOf(topic, msg), msg); err != nil {
				return fmt.Errorf("redisbus: publish to %s: %w", topic, err)
			}
		}
		return nil
	}
	if err := p.pub.Publish(topic, msgs...); err != nil {
		return fmt.Errorf("redisbus: publish to %s: %w", topic, err)
	}
	return nil
}

// Consumer is the name this process consumes topic under in the Group,
// once it subscribed to it ("" before): Config.Consumer, or the default
// it took.
func (p *PubSub) Consumer(topic string) string {
	p.leaseMu.Lock()
	defer p.leaseMu.Unlock()
	return p.leases[topic].name
}

// Close ends the subscriptions (what they hold unacknowledged stays
// pending under the Consumer's name), then closes the client.
func (p *PubSub) Close() error {
	p.closeOnce.Do(func() { close(p.closing) })
	p.subs.Wait()
	errs := []error{p.pub.Close(), p.client.Close()}
	for i, err := range errs {
		if errors.Is(err, redis.ErrClosed) {
			errs[i] = nil
		}
	}
	return errors.Join(errs...)
}
