package amqpbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus/internal/names"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
)

// A topic's lanes on RabbitMQ. Lane 0 is the topic's exchange and the
// Group's queue on it, topic_group (what a message without a key, or one
// published before lanes, goes to); lane n above 0 is the fanout exchange
// "<topic>._lane.<n>" and the Group's queue on it, "<topic>._lane.<n>_group".
// Each lane's queue is a classic queue with x-single-active-consumer:
// besides the leases, RabbitMQ itself hands a lane's messages to one
// consumer at a time. The number of lanes is recorded as the x-max-length
// of the queue "<topic>._lanes", never bound nor consumed: RabbitMQ
// refuses a declare of it with another figure.

const (
	// defaultLease is Config.Lease's default.
	defaultLease = 3 * time.Second
	// defaultHeartbeat is Config.Heartbeat's default.
	defaultHeartbeat = 10 * time.Second
	// lanesArg is the record queue's argument that holds the number of
	// lanes: one RabbitMQ compares when the queue is declared again.
	lanesArg = "x-max-length"
)

// checkLanes checks cfg's lanes and fills in the defaults.
func checkLanes(cfg *Config) error {
	var errs []error
	if cfg.Lanes < 0 {
		errs = append(errs, fmt.Errorf("amqpbus: Config.Lanes must not be negative: got %d", cfg.Lanes))
	}
	laned := cfg.Lanes > 1
	for topic, n := range cfg.TopicLanes {
		if n < 1 {
			errs = append(errs, fmt.Errorf("amqpbus: Config.TopicLanes[%q] must be at least 1: got %d", topic, n))
		}
		laned = laned || n > 1
	}
	if laned && cfg.Group != "" && cfg.Leases == nil {
		errs = append(errs, errors.New("amqpbus: Config.Leases is required to consume a topic of more than one lane (Config.Lanes, Config.TopicLanes): RabbitMQ keeps no leases; give fxoutbox.LaneLeaseStore's, on the outbox's database, or a fxbus.LeaseStore of your own"))
	}
	if cfg.Lease <= 0 {
		cfg.Lease = defaultLease
	}
	return errors.Join(errs...)
}

// lanesOf is how many lanes topic's keyed messages are spread over.
func (c Config) lanesOf(topic string) int {
	if n, ok := c.TopicLanes[topic]; ok {
		return n
	}
	return max(c.Lanes, 1)
}

// laneExchange is lane n's exchange of topic.
func laneExchange(topic string, n int) string { return names.LaneExchange(topic, n) }

// exchangeOf is the exchange msg is published to on topic: its key's
// lane's.
func (c Config) exchangeOf(topic string, msg *message.Message) string {
	n := c.lanesOf(topic)
	if n <= 1 {
		return topic
	}
	return laneExchange(topic, fxbus.LaneOf(msg.Metadata.Get(fxbus.MetadataKey), n))
}

// laneQueue is the Group's queue of topic's lane n.
func (p *PubSub) laneQueue(topic string, n int) string {
	return laneExchange(topic, n) + p.queueSuffix()
}

// lanesQueue is the queue whose x-max-length records topic's number of
// lanes.
func lanesQueue(topic string) string { return names.LanesQueue(topic) }

// checkLaneNames says whether topic's lanes' exchanges and queues can be
// named.
func (p *PubSub) checkLaneNames(topic string) error {
	n := p.cfg.lanesOf(topic)
	if n > 1 && (len(p.laneQueue(topic, n-1)) > 255 || len(lanesQueue(topic)) > 255) {
		return fmt.Errorf("amqpbus: topic %q is too long for %d lanes: its last lane's queue, %s, has more than 255 bytes", topic, n, p.laneQueue(topic, n-1))
	}
	return nil
}

// checkRecordedLanes records topic's number of lanes, or refuses a number
// that differs from the one recorded: every producer and consumer of a
// topic must put a key in the same lane. A topic of one lane (the
// default) is not recorded, only checked against a record, so that a
// service that does not use lanes makes no queue.
func (p *PubSub) checkRecordedLanes(conn *amqp.Connection, topic string) error {
	n := p.cfg.lanesOf(topic)
	q := lanesQueue(topic)
	if n == 1 {
		err := withChannel(conn, func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
			return err
		})
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return nil
		}
		if err != nil {
			return fmt.Errorf("amqpbus: the lanes of %s: %w", topic, err)
		}
	}
	err := withChannel(conn, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "classic", lanesArg: int64(n)})
		return err
	})
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed && strings.Contains(ae.Reason, "'"+lanesArg+"'") {
		recorded := "another number of"
		if _, current, ok := strings.Cut(ae.Reason, "current is "); ok {
			recorded, _, _ = strings.Cut(strings.TrimPrefix(strings.TrimPrefix(current, "the value "), "'"), "'")
		}
		return fmt.Errorf("amqpbus: topic %s has %s lanes (recorded as the %s of the queue %s), and this process is configured with %d (Config.Lanes, Config.TopicLanes): every producer and consumer of a topic must use one figure; to change it, drain the topic (stop its producers, let its consumers finish), then delete the queue %s and start with the new figure",
			topic, recorded, lanesArg, q, n, q)
	}
	if err != nil {
		return fmt.Errorf("amqpbus: record the lanes of %s: %w", topic, err)
	}
	return nil
}

// declareLanes declares topic's lanes' exchanges and, with a Group, its
// queues, each with x-single-active-consumer. Lane 0's queue, the Group's
// queue on the topic, may exist without it (made before the topic had
// lanes): it is used as it is, its consumers kept one at a time by the
// leases alone.
func (p *PubSub) declareLanes(conn *amqp.Connection, topic string, queues bool) error {
	for n := range p.cfg.lanesOf(topic) {
		ex := laneExchange(topic, n)
		if err := withChannel(conn, func(ch *amqp.Channel) error { return p.declareExchange(ch, ex) }); err != nil {
			return err
		}
		p.pub.known.Store(ex, true)
		if !queues || p.cfg.Group == "" {
			continue
		}
		q := p.laneQueue(topic, n)
		err := withChannel(conn, func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "classic", "x-single-active-consumer": true})
			return err
		})
		var ae *amqp.Error
		if n == 0 && errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed && strings.Contains(ae.Reason, "'x-single-active-consumer'") {
			err = withChannel(conn, func(ch *amqp.Channel) error {
				_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "classic"})
				return err
			})
			if err == nil {
				p.cfg.Logger.Warn("amqpbus: lane 0's queue exists without x-single-active-consumer (made before the topic had lanes): its consumers are kept one at a time by the leases alone; delete it once drained to have it declared with it",
					zap.String("queue", q))
			}
		}
		if err != nil {
			return queueTypeError(q, err)
		}
		if err := withChannel(conn, func(ch *amqp.Channel) error { return ch.QueueBind(q, "", ex, false, nil) }); err != nil {
			return err
		}
	}
	return nil
}

// withChannel runs f on a channel of its own: a declare RabbitMQ refuses
// closes its channel.
func withChannel(conn *amqp.Connection, f func(*amqp.Channel) error) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	err = f(ch)
	if cerr := ch.Close(); err == nil && cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
		err = cerr
	}
	return err
}

// prefixedStore is Config.Leases under a prefix: a group's leases on a
// topic.
type prefixedStore struct {
	s      fxbus.LeaseStore
	prefix string
}

// leasePrefix is the prefix of group's leases on topic:
// "amqp.<len>.<topic>.<len>.<group>.", each with its length so that no
// other topic and group (a topic "a.b" and a group "c", a topic "a" and a
// group "b.c"; a group "svc" and a group "svc.x") make it or start with
// it; a hash of them when that is long (a store's names have at most 255
// bytes).
func leasePrefix(topic, group string) string {
	prefix := "amqp." + strconv.Itoa(len(topic)) + "." + topic + "." + strconv.Itoa(len(group)) + "." + group + "."
	if len(prefix) > 160 {
		h := sha256.Sum256([]byte(topic + "\x00" + group))
		prefix = "amqp." + hex.EncodeToString(h[:16]) + "."
	}
	return prefix
}

func (s prefixedStore) List(ctx context.Context, prefix string) (map[string]fxbus.LeaseEntry, error) {
	all, err := s.s.List(ctx, s.prefix+prefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]fxbus.LeaseEntry, len(all))
	for name, e := range all {
		if rest, ok := strings.CutPrefix(name, s.prefix); ok {
			out[rest] = e
		}
	}
	return out, nil
}

func (s prefixedStore) Put(ctx context.Context, name string, value []byte, rev uint64) (uint64, error) {
	return s.s.Put(ctx, s.prefix+name, value, rev)
}
