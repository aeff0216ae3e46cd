package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	"github.com/redis/go-redis/v9"
)

// A topic's lanes on Redis: lane 0 is the topic's stream, lane n above 0
// the stream "<topic>._lane.<n>". The owner of a lane reads its stream in
// the Group under one consumer name, "lane", whoever it is: what a
// previous owner held and did not acknowledge is pending under that name,
// and the next owner reads it first, in stream order, before new entries.

const (
	// laneConsumerName is the consumer name every owner of a lane reads
	// under.
	laneConsumerName = "lane"
	// defaultLease is Config.Lease's default.
	defaultLease = 3 * time.Second
)

func checkLanes(cfg *Config) error {
	if cfg.Lanes < 0 {
		return fmt.Errorf("redisbus: Config.Lanes must not be negative: got %d", cfg.Lanes)
	}
	for topic, n := range cfg.TopicLanes {
		if n < 1 {
			return fmt.Errorf("redisbus: Config.TopicLanes[%q] must be at least 1: got %d", topic, n)
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

// laneStream is the stream of topic's lane n.
func laneStream(topic string, n int) string {
	if n == 0 {
		return topic
	}
	return topic + "._lane." + strconv.Itoa(n)
}

// streamOf is the stream msg goes to on topic: its key's lane's.
func (p *PubSub) streamOf(topic string, msg *message.Message) string {
	return laneStream(topic, fxbus.LaneOf(msg.Metadata.Get(fxbus.MetadataKey), p.lanesOf(topic)))
}

// lanesKey is where topic's number of lanes is recorded.
func lanesKey(topic string) string { return "fxcqrs:lanes:" + topic }

// checkRecordedLanes records topic's number of lanes, or refuses a number
// that differs from the one recorded.
//
// A topic of one lane (the default) is not recorded, only checked against
// a record.
func (p *PubSub) checkRecordedLanes(ctx context.Context, topic string) error {
	n := p.lanesOf(topic)
	if n == 1 {
		recorded, err := p.client.Get(ctx, lanesKey(topic)).Int()
		switch {
		case errors.Is(err, redis.Nil):
			return nil
		case err != nil:
			return fmt.Errorf("redisbus: the lanes of %s: %w", topic, err)
		case recorded != n:
			return lanesMismatch(topic, recorded, n)
		}
		return nil
	}
	ok, err := p.client.SetNX(ctx, lanesKey(topic), n, 0).Result()
	if err != nil {
		return fmt.Errorf("redisbus: record the lanes of %s: %w", topic, err)
	}
	if ok {
		return nil
	}
	recorded, err := p.client.Get(ctx, lanesKey(topic)).Int()
	if err != nil {
		return fmt.Errorf("redisbus: the lanes of %s: %w", topic, err)
	}
	if recorded != n {
		return lanesMismatch(topic, recorded, n)
	}
	return nil
}

func lanesMismatch(topic string, recorded, n int) error {
	return fmt.Errorf("redisbus: topic %s has %d lanes (recorded under the key %s), and this process is configured with %d (Config.Lanes, Config.TopicLanes): every producer and consumer of a topic must use one figure; to change it, drain the topic (stop its producers, let its consumers finish), then delete the key and start with the new figure",
		topic, recorded, lanesKey(topic), n)
}

// leaseStore is the ownership store of a Group's lanes of a topic: a
// hash whose fields are "<revision>|<value>", written by a script that
// compares the revision.
type leaseStore struct {
	client *redis.Client
	key    string // fxcqrs:own:<topic>:<group>
}

var _ ownership.Store = (*leaseStore)(nil)

// putScript writes ARGV[1] = ARGV[3] if its revision is ARGV[2] (0: none),
// and returns the new revision, or -1.
var putScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local rev = 0
if cur then rev = tonumber(string.match(cur, '^(%d+)|')) end
if rev ~= tonumber(ARGV[2]) then return -1 end
local next = redis.call('HINCRBY', KEYS[1], '_rev', 1)
redis.call('HSET', KEYS[1], ARGV[1], next .. '|' .. ARGV[3])
return next
`)

func (s *leaseStore) List(ctx context.Context, prefix string) (map[string]ownership.Entry, error) {
	all, err := s.client.HGetAll(ctx, s.key).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]ownership.Entry{}
	for name, v := range all {
		if name == "_rev" || !strings.HasPrefix(name, prefix) {
			continue
		}
		revText, value, ok := strings.Cut(v, "|")
		rev, err := strconv.ParseUint(revText, 10, 64)
		if !ok || err != nil {
			continue
		}
		out[name] = ownership.Entry{Value: []byte(value), Rev: rev}
	}
	return out, nil
}

func (s *leaseStore) Put(ctx context.Context, name string, value []byte, rev uint64) (uint64, error) {
	n, err := putScript.Run(ctx, s.client, []string{s.key}, name, rev, string(value)).Int64()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, ownership.ErrConflict
	}
	return uint64(n), nil
}

var errLaneClosed = errors.New("redisbus: closed")
