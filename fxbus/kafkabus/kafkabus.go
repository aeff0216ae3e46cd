package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/fx"
)

// Config configures a PubSub. Group is required to subscribe.
type Config struct {
	// Brokers are the seed brokers' host:port. Default 127.0.0.1:9092.
	Brokers []string
	// Options are franz-go's client options beside the seeds (TLS, SASL,
	// a logger), given to every client the PubSub makes. Options that
	// the PubSub sets itself (the group, the balancer, the commits, the
	// producer's acks and idempotence) are set after these.
	Options []kgo.Opt
	// Group names the service: its consumer group, which its replicas
	// share. Required to subscribe.
	Group string
	// Partitions is the number of partitions Provision gives a topic it
	// creates. It bounds the consumer replicas that share a topic's work:
	// a replica beyond it gets no partition. Default 12.
	Partitions int32
	// ReplicationFactor is the replicas Provision gives each partition of
	// a topic it creates; 3 in production. Default -1: the cluster's
	// default.replication.factor.
	ReplicationFactor int16
	// MaxRecordBytes is the largest record the producer sends (the
	// producer's max.request.size; the topic's max.message.bytes must be
	// at least as large). Default 1 MiB, Kafka's default. A payload may
	// take all of it but the MetadataAllowance (16 KiB) kept for the key
	// and the metadata (see Capabilities).
	MaxRecordBytes int
	// RebalanceTimeout is how long the group waits for its members to
	// rejoin in a rebalance. A revoked partition's messages in flight are
	// waited for up to half of it before the partition is given up.
	// Default 60s.
	RebalanceTimeout time.Duration
	// StartTimeout bounds New's check that a seed broker answers.
	// Default 10s.
	StartTimeout time.Duration
	// CommitInterval is how often a subscription commits its
	// partitions' handled offsets (franz-go's autocommit of marked
	// offsets, Kafka's auto.commit.interval.ms); a revoke and a close
	// commit at once. After a crash, up to an interval of handled
	// messages are handed over again (the inbox drops them).
	// Default 1s; at least 100ms (franz-go's least).
	CommitInterval time.Duration
}

// minCommitInterval is franz-go's least autocommit interval.
const minCommitInterval = 100 * time.Millisecond

// MetadataAllowance is the part of Config.MaxRecordBytes kept for a
// record's key, headers and framing: a payload may take the rest.
const MetadataAllowance = 16 << 10

// idHeader carries a message's id, under watermill-kafka's name, so that
// its subscribers read the ids this package writes and the other way round.
const idHeader = "_watermill_message_uuid"

// PubSub publishes to and subscribes on Kafka. It is an fxbus.Broker, an
// fxbus.Provisioner, an fxbus.BatchPublisher and an fxbus.FlowSubscriber.
type PubSub struct {
	cfg   Config
	prod  *kgo.Client
	admin *kadm.Client

	mu     sync.Mutex
	subs   map[*consumer]struct{}
	closed bool
}

var (
	_ message.Publisher          = (*PubSub)(nil)
	_ message.Subscriber         = (*PubSub)(nil)
	_ fxbus.Broker               = (*PubSub)(nil)
	_ fxbus.Provisioner          = (*PubSub)(nil)
	_ fxbus.BatchPublisher       = (*PubSub)(nil)
	_ fxbus.FlowSubscriber       = (*PubSub)(nil)
	_ interface{ Close() error } = (*PubSub)(nil)
)

// pubSub is a publisher and a subscriber in one, what Module provides.
type pubSub interface {
	message.Publisher
	message.Subscriber
}

// Module is the preset under fx, one line in an application:
//
//	fx.New(fxcqrs.Module, fxbus.Module,
//		kafkabus.Module(kafkabus.Config{Brokers: []string{"kafka-1:9092"}, Group: "billing"}),
//		…)
//
// It makes the PubSub with New as the graph is built (fx.New fails with
// New's error), gives it to fxbus as the message.Publisher and the
// message.Subscriber (and provides the *PubSub itself), and closes it
// when the application stops, after the bus has stopped consuming.
// Without fx, call New and give the PubSub to fxbus.Config.
//
// (The other presets share these lines through an internal package of
// the fxbus module, which this module cannot import.)
func Module(cfg Config) fx.Option {
	return fx.Module("kafkabus",
		fx.Provide(
			func(lc fx.Lifecycle) (*PubSub, error) {
				p, err := New(cfg)
				if err != nil {
					return nil, err
				}
				lc.Append(fx.StopHook(p.Close))
				return p, nil
			},
			func(p *PubSub) message.Publisher { return p },
			func(p *PubSub) message.Subscriber { return p },
		),
	)
}

var _ pubSub = (*PubSub)(nil)

// New makes the producer, asks the seed brokers for the cluster's
// metadata within StartTimeout (franz-go connects lazily: without this,
// an unreachable cluster would show at the first message), and returns a
// PubSub. When no seed answers, the error names each with its cause.
func New(cfg Config) (*PubSub, error) {
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = []string{"127.0.0.1:9092"}
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 12
	}
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = -1
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = 1 << 20
	}
	if cfg.MaxRecordBytes <= MetadataAllowance {
		return nil, fmt.Errorf("kafkabus.New: MaxRecordBytes %d leaves no room for a payload beside the %d bytes kept for the key and metadata", cfg.MaxRecordBytes, MetadataAllowance)
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = 60 * time.Second
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	if cfg.CommitInterval < minCommitInterval {
		return nil, fmt.Errorf("kafkabus.New: CommitInterval %v is below %v, the least franz-go commits at", cfg.CommitInterval, minCommitInterval)
	}
	opts := append(clientOpts(cfg),
		kgo.RequiredAcks(kgo.AllISRAcks()), // and idempotence, franz-go's default, stays on
		kgo.ProducerBatchMaxBytes(int32(cfg.MaxRecordBytes)),
		kgo.UnknownTopicRetries(2),
		kgo.RecordPartitioner(partitioner()),
	)
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkabus.New: %w", err)
	}
	if err := checkSeeds(prod, cfg); err != nil {
		prod.Close()
		return nil, err
	}
	return &PubSub{
		cfg: cfg, prod: prod, admin: kadm.NewClient(prod),
		subs: map[*consumer]struct{}{},
	}, nil
}

func clientOpts(cfg Config) []kgo.Opt {
	opts := append([]kgo.Opt(nil), cfg.Options...)
	return append(opts, kgo.SeedBrokers(cfg.Brokers...))
}

// checkSeeds asks every seed broker for the cluster's metadata at once,
// within StartTimeout; it fails when none answers, naming each.
func checkSeeds(cl *kgo.Client, cfg Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
	defer cancel()
	seeds := cl.SeedBrokers()
	errs := make([]error, len(seeds))
	var wg sync.WaitGroup
	for i, b := range seeds {
		wg.Go(func() {
			_, errs[i] = b.Request(ctx, kmsg.NewPtrMetadataRequest())
		})
	}
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err == nil {
			return nil // one seed is enough: it tells the client every broker
		}
		name := fmt.Sprintf("seed %d", i)
		if len(seeds) == len(cfg.Brokers) { // franz-go keeps the seeds in their order
			name = cfg.Brokers[i]
		}
		failed = append(failed, fmt.Sprintf("%s (%v)", name, err))
	}
	return fmt.Errorf("kafkabus.New: no seed broker answered within %v: %s: %w",
		cfg.StartTimeout, strings.Join(failed, "; "), errors.Join(errs...))
}

// Capabilities states what the PubSub does (fxbus.Broker): order per key
// (a key is a record key, in one partition, handled in offset order),
// parallel handling within a partition across keys, and the payload and
// topic limits.
func (p *PubSub) Capabilities() fxbus.Capabilities {
	return fxbus.Capabilities{
		Name:        "kafka",
		OrderPerKey: true,
		Parallel:    true,
		MaxPayload:  p.cfg.MaxRecordBytes - MetadataAllowance,
		TopicRule:   TopicRule,
	}
}

// CloudEventsBinding is Kafka's protocol binding of CloudEvents: a route
// with fxbus.CloudEvents writes its attributes as "ce_" headers,
// datacontenttype as the content-type header, and its key (the
// partitionkey attribute) is the record's key.
func (*PubSub) CloudEventsBinding() fxbus.CloudEventsBinding { return fxbus.CloudEventsKafka }

// TopicRule is Kafka's rule for topic names.
const TopicRule = `letters, digits, ".", "_" and "-"; at most 249 characters; not "." or ".."`

// CheckTopic returns an error naming topic and Kafka's rule when Kafka
// cannot take topic (fxbus.Broker).
func (p *PubSub) CheckTopic(topic string) error { return CheckTopic(topic) }

// CheckTopic is PubSub.CheckTopic, without a PubSub.
func CheckTopic(topic string) error {
	ok := topic != "" && topic != "." && topic != ".." && len(topic) <= 249
	for _, r := range topic {
		if !ok {
			break
		}
		ok = r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
	}
	if !ok {
		return fmt.Errorf("kafkabus: topic %q is not a Kafka topic name: %s", topic, TopicRule)
	}
	return nil
}

// Provision creates the topics that do not exist, with Config.Partitions
// partitions and Config.ReplicationFactor replicas each
// (fxbus.Provisioner). A topic that exists is left as it is.
func (p *PubSub) Provision(ctx context.Context, topics ...string) error {
	for _, t := range topics {
		if err := CheckTopic(t); err != nil {
			return fmt.Errorf("kafkabus.Provision: %w", err)
		}
	}
	resps, err := p.admin.CreateTopics(ctx, p.cfg.Partitions, p.cfg.ReplicationFactor, nil, topics...)
	if err != nil {
		return fmt.Errorf("kafkabus.Provision: create %s: %w", strings.Join(topics, ", "), err)
	}
	var errs []error
	for _, t := range topics {
		r, ok := resps[t]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("kafkabus.Provision: topic %s: no answer", t))
		case r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists):
			errs = append(errs, fmt.Errorf("kafkabus.Provision: topic %s: %w", t, r.Err))
		}
	}
	return errors.Join(errs...)
}

// Close closes every subscription (each finishes the messages it handed
// over, commits and leaves the group), then flushes and closes the
// producer.
func (p *PubSub) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	subs := make([]*consumer, 0, len(p.subs))
	for c := range p.subs {
		subs = append(subs, c)
	}
	p.mu.Unlock()
	for _, c := range subs {
		c.close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.RebalanceTimeout)
	defer cancel()
	err := p.prod.Flush(ctx)
	p.prod.Close()
	if err != nil {
		return fmt.Errorf("kafkabus: close: flush the producer: %w", err)
	}
	return nil
}

// Check reports whether a broker answers, for fxbus's health check.
func (p *PubSub) Check(ctx context.Context) error {
	if err := p.prod.Ping(ctx); err != nil {
		return fmt.Errorf("kafkabus: no broker of %s answers: %w", strings.Join(p.cfg.Brokers, ", "), err)
	}
	return nil
}

// partitioner puts a keyed record where Kafka's own clients do (murmur2 of
// the key), and spreads records without a key over the partitions in
// turn, one record each, so that the consumers of a group share them
// (franz-go's default keeps a partition for a whole batch).
func partitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
		keyed := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
		var next atomic.Uint64
		return func(r *kgo.Record, n int) int {
			if r.Key != nil {
				return keyed.Partition(r, n)
			}
			return int((next.Add(1) - 1) % uint64(n))
		}
	})
}
