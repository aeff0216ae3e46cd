package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	"github.com/nats-io/nats.go"
)

// A topic's lanes on JetStream. Lane 0 is the topic's own subject (what a
// message without a key, or one published before lanes, goes to); lane n
// above 0 is the subject "<topic>._lane.<n>", in the topic's stream too.
// A subscription with InOrder consumes each lane it owns through a durable
// consumer of its own, "<group>_lane<n>", filtered on the lane's subject
// (NATS 2.9 filters a consumer on one subject).

const (
	// lanesBucket is the key-value bucket where each topic's number of
	// lanes is recorded, by stream name.
	lanesBucket = "fxcqrs_lanes"
	// ownershipBucket is the key-value bucket of the lanes' leases: by
	// "<stream>.<group>.", each member's and each lane's.
	ownershipBucket = "fxcqrs_ownership"
	// defaultLease is Config.Lease's default.
	defaultLease = 3 * time.Second
)

// checkLanes checks cfg's lanes and fills in the defaults.
func checkLanes(cfg *Config) error {
	if cfg.Lanes < 0 {
		return fmt.Errorf("natsjs: Config.Lanes must not be negative: got %d", cfg.Lanes)
	}
	for topic, n := range cfg.TopicLanes {
		if n < 1 {
			return fmt.Errorf("natsjs: Config.TopicLanes[%q] must be at least 1: got %d", topic, n)
		}
	}
	if cfg.Lease <= 0 {
		cfg.Lease = defaultLease
	}
	return nil
}

// lanesOf is how many lanes topic's keyed messages are spread over.
func (p *PubSub) lanesOf(topic string) int {
	if n, ok := p.cfg.TopicLanes[topic]; ok {
		return n
	}
	return max(p.cfg.Lanes, 1)
}

// laneSubject is lane n's subject of topic.
func laneSubject(topic string, n int) string {
	if n == 0 {
		return topic
	}
	return topic + "._lane." + strconv.Itoa(n)
}

// laneWildcard is the subject of every lane of topic above 0.
func laneWildcard(topic string) string { return topic + "._lane.*" }

// subject is the subject msg is published to on topic: its key's lane's.
func (p *PubSub) subject(topic string, msg *message.Message) string {
	n := p.lanesOf(topic)
	if n <= 1 {
		return topic
	}
	return laneSubject(topic, fxbus.LaneOf(msg.Metadata.Get(fxbus.MetadataKey), n))
}

// bucket returns the key-value bucket name, made when missing.
func (p *PubSub) bucket(name string) (nats.KeyValue, error) {
	kv, err := p.js.KeyValue(name)
	if errors.Is(err, nats.ErrBucketNotFound) {
		kv, err = p.js.CreateKeyValue(&nats.KeyValueConfig{Bucket: name, History: 1})
		if errors.Is(err, nats.ErrStreamNameAlreadyInUse) {
			kv, err = p.js.KeyValue(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("natsjs: key-value bucket %s: %w", name, err)
	}
	return kv, nil
}

// checkRecordedLanes records topic's number of lanes, or refuses a number
// that differs from the one recorded: every producer and consumer of a
// topic must put a key in the same lane.
//
// A topic of one lane (the default) is not recorded, only checked against
// a record, so that a service that does not use lanes makes no bucket.
func (p *PubSub) checkRecordedLanes(topic string) error {
	n := p.lanesOf(topic)
	name := streamName(topic)
	if n == 1 {
		kv, err := p.js.KeyValue(lanesBucket)
		if errors.Is(err, nats.ErrBucketNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("natsjs: key-value bucket %s: %w", lanesBucket, err)
		}
		e, err := kv.Get(name)
		if errors.Is(err, nats.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("natsjs: the lanes of %s: %w", topic, err)
		}
		return p.sameLanes(topic, string(e.Value()), n)
	}
	kv, err := p.bucket(lanesBucket)
	if err != nil {
		return err
	}
	_, err = kv.Create(name, []byte(strconv.Itoa(n)))
	if !errors.Is(err, nats.ErrKeyExists) {
		if err != nil {
			return fmt.Errorf("natsjs: record the lanes of %s: %w", topic, err)
		}
		return nil
	}
	e, err := kv.Get(name)
	if err != nil {
		return fmt.Errorf("natsjs: the lanes of %s: %w", topic, err)
	}
	return p.sameLanes(topic, string(e.Value()), n)
}

// sameLanes refuses n lanes for topic when recorded says otherwise.
func (p *PubSub) sameLanes(topic, recorded string, n int) error {
	name := streamName(topic)
	if r, _ := strconv.Atoi(recorded); r != n {
		return fmt.Errorf("natsjs: topic %s has %s lanes (recorded in the key-value bucket %s), and this process is configured with %d (Config.Lanes, Config.TopicLanes): every producer and consumer of a topic must use one figure; to change it, drain the topic (stop its producers, let its consumers finish), then delete the record (nats kv del %s %s) and start with the new figure",
			topic, recorded, lanesBucket, n, lanesBucket, name)
	}
	return nil
}

// laneStore is the ownership store of a group's lanes of a topic, on the
// ownership bucket.
type laneStore struct {
	kv     nats.KeyValue
	prefix string // "<stream>.<group>."
}

var _ ownership.Store = (*laneStore)(nil)

// List reads every entry under prefix through a watcher's initial values.
func (s *laneStore) List(ctx context.Context, prefix string) (map[string]ownership.Entry, error) {
	subject := s.prefix + prefix
	if prefix == "" {
		subject += ">"
	}
	w, err := s.kv.Watch(subject, nats.IgnoreDeletes(), nats.Context(ctx))
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	out := map[string]ownership.Entry{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("the watcher ended")
			}
			if e == nil {
				return out, nil // the initial values are in
			}
			out[e.Key()[len(s.prefix):]] = ownership.Entry{Value: e.Value(), Rev: e.Revision()}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Put writes name if its revision is still rev.
func (s *laneStore) Put(_ context.Context, name string, value []byte, rev uint64) (uint64, error) {
	var (
		n   uint64
		err error
	)
	if rev == 0 {
		n, err = s.kv.Create(s.prefix+name, value)
	} else {
		n, err = s.kv.Update(s.prefix+name, value, rev)
	}
	if errors.Is(err, nats.ErrKeyExists) || errors.Is(err, nats.ErrKeyRevisionMismatch) {
		return 0, ownership.ErrConflict
	}
	return n, err
}
