package amqpbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus/internal/names"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Config configures a PubSub. URL is required; Group to subscribe.
type Config struct {
	// URL is RabbitMQ's, such as amqp://guest:guest@127.0.0.1:5672/.
	URL string
	// Group names the service: its durable queue on each topic, which
	// its replicas share. Required to subscribe; a PubSub without one
	// only publishes, and Provision declares only exchanges.
	Group string
	// Prefetch is a plain Subscribe's bound on the messages RabbitMQ
	// hands the consumer before they are acknowledged (SubscribeFlow
	// takes the subscription's InFlight instead). Default 16.
	Prefetch int
	// Channels is the size of the publisher's pool of confirm-mode
	// channels. Default 8.
	Channels int
	// MaxPayload is the server's max_message_size, in bytes: a message
	// larger (payload and headers) fails to publish, naming it. Default
	// RabbitMQ's own: 128 MiB before 4.0, 16 MiB from 4.0 (read from the
	// server's version when New connects).
	MaxPayload int
	// Dial opens the TCP connections (a proxy, a test that cuts them as a
	// killed process's are). Default: amqp091's, 30 s to connect.
	Dial func(network, addr string) (net.Conn, error)
	// Heartbeat is the AMQP heartbeat asked of RabbitMQ (the lower of
	// this and the server's heartbeat setting is used): RabbitMQ closes
	// the connection of a host it has not heard from for two to three
	// times this, and only then does a lane's single active consumer pass
	// to the lane's next owner. Default 10s.
	Heartbeat time.Duration
	// Lanes is how many lanes a topic's keyed messages are spread over,
	// unless TopicLanes says otherwise: 1 by default. With more, each
	// lane is an exchange and a queue of its own (fxbus.LaneOf; lane 0
	// is the topic's), and the Group's replicas share the lanes, one
	// owner per lane at a time (see the package doc). One figure per
	// topic for every producer and consumer: Provision records it and
	// refuses another.
	Lanes int
	// TopicLanes sets the number of lanes of some topics, by topic.
	TopicLanes map[string]int
	// Member names this process among its Group's replicas in the lanes'
	// leases: unique in the Group, without dot, space or wildcard.
	// Default: a random name.
	Member string
	// Lease is how long a replica's lanes stay its own after its last
	// renewal (every Lease/6): a replica that dies leaves its lanes to
	// the others within Lease and one renewal. Default 3s.
	Lease time.Duration
	// Leases keeps the lanes' leases, RabbitMQ keeping none: required to
	// consume a topic of more than one lane. fxoutbox.LaneLeaseStore is
	// one on the outbox's database (and fxoutbox.Module provides it).
	Leases fxbus.LeaseStore
	// Logger logs what goes wrong with the lanes' leases. Default none.
	Logger *zap.Logger
}

// dial connects to url as amqp.Dial does, with Config.Heartbeat, through
// Config.Dial.
func (c Config) dial(url string) (*amqp.Connection, error) {
	return amqp.DialConfig(url, amqp.Config{Heartbeat: c.Heartbeat, Locale: "en_US", Dial: c.Dial})
}

// PubSub publishes to and subscribes on RabbitMQ. It is an
// fxbus.Broker, an fxbus.Provisioner, an fxbus.FlowSubscriber and an
// fxbus.BatchPublisher.
type PubSub struct {
	cfg Config
	pub *publisher

	subMu   sync.Mutex
	subConn *amqp.Connection // the consumers', redialled when lost

	killed    chan struct{} // closed by the tests' Kill: no renewal, no release
	closing   chan struct{}
	closeOnce sync.Once
	subs      sync.WaitGroup // subscriptions' goroutines
}

var (
	_ message.Publisher         = (*PubSub)(nil)
	_ message.Subscriber        = (*PubSub)(nil)
	_ fxbus.Broker              = (*PubSub)(nil)
	_ fxbus.Provisioner         = (*PubSub)(nil)
	_ fxbus.ConsumerProvisioner = (*PubSub)(nil)
	_ fxbus.FlowSubscriber      = (*PubSub)(nil)
	_ fxbus.BatchPublisher      = (*PubSub)(nil)
)

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
	return fx.Module("amqpbus",
		fx.Provide(
			func(p moduleParams) (*PubSub, error) {
				c := cfg
				if c.Leases == nil {
					c.Leases = p.Leases
				}
				ps, err := New(c)
				if err != nil {
					return nil, err
				}
				p.Lifecycle.Append(fx.StopHook(ps.Close))
				return ps, nil
			},
			func(p *PubSub) message.Publisher { return p },
			func(p *PubSub) message.Subscriber { return p },
		),
	)
}

// moduleParams is what Module takes from the graph.
type moduleParams struct {
	fx.In

	Lifecycle fx.Lifecycle
	Leases    fxbus.LeaseStore `optional:"true"`
}

// New connects to RabbitMQ and returns a PubSub on it.
func New(cfg Config) (*PubSub, error) {
	if cfg.URL == "" {
		return nil, errors.New("amqpbus: Config.URL is required")
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 16
	}
	if cfg.Channels <= 0 {
		cfg.Channels = 8
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = defaultHeartbeat
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if err := checkLanes(&cfg); err != nil {
		return nil, err
	}
	conn, err := cfg.dial(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("amqpbus: RabbitMQ at %s cannot be reached: %w", redacted(cfg.URL), err)
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = defaultMaxPayload(conn)
	}
	p := &PubSub{cfg: cfg, subConn: conn, closing: make(chan struct{}), killed: make(chan struct{})}
	p.pub = newPublisher(cfg, cfg.Channels, cfg.MaxPayload)
	return p, nil
}

// defaultMaxPayload is RabbitMQ's default max_message_size for the
// server's version: 128 MiB from 3.8, 16 MiB from 4.0.
func defaultMaxPayload(conn *amqp.Connection) int {
	v, _ := conn.Properties["version"].(string)
	if major, _, _ := strings.Cut(v, "."); major != "" && major >= "4" && len(major) == 1 {
		return 16 << 20
	}
	return 128 << 20
}

// Capabilities states what RabbitMQ gives: a queue's order, kept per key
// under InOrder through nacks and restarts (a closed channel's
// unacknowledged messages go back to their places), InFlight messages at
// once (the channel's prefetch), and the server's message size limit.
func (p *PubSub) Capabilities() fxbus.Capabilities {
	return fxbus.Capabilities{
		Name:        "rabbitmq",
		OrderPerKey: true,
		Parallel:    true,
		MaxPayload:  p.cfg.MaxPayload,
		TopicRule:   p.topicRule(),
	}
}

// CloudEventsBinding is AMQP's protocol binding of CloudEvents: a route
// with fxbus.CloudEvents writes its attributes as "cloudEvents:" headers
// and datacontenttype as the message's content-type property.
func (*PubSub) CloudEventsBinding() fxbus.CloudEventsBinding { return fxbus.CloudEventsAMQP }

func (p *PubSub) topicRule() string {
	return fmt.Sprintf("1 to %d bytes of letters, digits, '-', '_', '.' and ':' (an exchange name; its queue, topic_%s, has at most 255), not starting with \"amq.\"", 255-len(p.queueSuffix()), p.cfg.Group)
}

func (p *PubSub) queueSuffix() string { return names.QueueSuffix(p.cfg.Group) }

// CheckTopic says whether topic can name an exchange and, with the
// Group, a queue.
func (p *PubSub) CheckTopic(topic string) error {
	ok := topic != "" && len(topic)+len(p.queueSuffix()) <= 255 && !strings.HasPrefix(topic, "amq.")
	for _, r := range topic {
		if !ok {
			break
		}
		ok = r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r)
	}
	if !ok {
		return fmt.Errorf("amqpbus: topic %q is not one RabbitMQ takes: %s", topic, p.topicRule())
	}
	return nil
}

// queue is the Group's queue on topic.
func (p *PubSub) queue(topic string) string { return topic + p.queueSuffix() }

// Provision declares each topic's exchange (a durable fanout): what
// publishing needs. Publish refuses a topic whose exchange does not exist.
// RabbitMQ drops a message published to an exchange that no queue is
// bound to: a consuming service's queue is made by ProvisionConsumer,
// which the bus calls at the consumer's start; make it ahead (from a
// deploy job, with the consumer's Group) when a publisher may start
// first.
func (p *PubSub) Provision(ctx context.Context, topics ...string) error {
	return p.provision(ctx, false, topics)
}

// ProvisionConsumer declares each topic's exchange and the Group's
// durable queue bound to it, so that what is published before the service
// first subscribes waits in its queue: what consuming needs. The bus calls
// it for the topics it subscribes to and for their dead letters (so that
// they are kept in a queue of the service's, not dropped), and Provision
// for those it only publishes to, which leaves no queue for nobody to
// read.
func (p *PubSub) ProvisionConsumer(ctx context.Context, topics ...string) error {
	return p.provision(ctx, true, topics)
}

func (p *PubSub) provision(ctx context.Context, consume bool, topics []string) error {
	conn, err := p.connection()
	if err != nil {
		return fmt.Errorf("amqpbus: provision %s: %w", strings.Join(topics, ", "), err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqpbus: provision %s: %w", strings.Join(topics, ", "), err)
	}
	defer ch.Close()
	for _, topic := range topics {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("amqpbus: provision %s: %w", topic, err)
		}
		if err := p.CheckTopic(topic); err != nil {
			return err
		}
		if err := p.checkLaneNames(topic); err != nil {
			return err
		}
		if err := p.checkRecordedLanes(conn, topic); err != nil {
			return err
		}
		var err error
		switch {
		case p.cfg.lanesOf(topic) > 1:
			err = p.declareLanes(conn, topic, consume)
		case consume:
			err = p.declare(ch, topic)
		default:
			err = p.declareExchange(ch, topic)
		}
		if err != nil {
			return fmt.Errorf("amqpbus: provision %s for %q: %w", topic, p.cfg.Group, err)
		}
		p.pub.known.Store(topic, true)
	}
	return nil
}

// declareExchange declares topic's exchange, a durable fanout.
func (*PubSub) declareExchange(ch *amqp.Channel, topic string) error {
	return ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil)
}

// declare declares topic's exchange and the Group's queue bound to it,
// as watermill-amqp's durable pub/sub did (a deployment's exchanges and
// queues are those).
func (p *PubSub) declare(ch *amqp.Channel, topic string) error {
	if err := p.declareExchange(ch, topic); err != nil {
		return err
	}
	if p.cfg.Group == "" {
		return nil
	}
	q := p.queue(topic)
	// Classic, named: a vhost whose default queue type is quorum would
	// make a quorum queue of a declare that names none.
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "classic"}); err != nil {
		return queueTypeError(q, err)
	}
	return ch.QueueBind(q, "", topic, false, nil)
}

// queueTypeError is err, or, when RabbitMQ refused the declare because q
// exists as a queue of another type than classic, a message that says
// why amqpbus refuses it and what to do (see the package doc, "Queue
// type").
func queueTypeError(q string, err error) error {
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed || !strings.Contains(ae.Reason, "'x-queue-type'") {
		return err
	}
	typ := "non-classic"
	if _, current, ok := strings.Cut(ae.Reason, "current is "); ok {
		typ, _, _ = strings.Cut(strings.TrimPrefix(strings.TrimPrefix(current, "the value "), "'"), "'")
	}
	return fmt.Errorf("queue %s is a %s queue, and amqpbus consumes classic queues only (a quorum queue puts a requeued message behind its key's newer ones, and drops it past its delivery limit); move its messages to a classic queue of that name, or give the service another Group: %w", q, typ, err)
}

// connection is the consumers' connection, dialled again when lost.
func (p *PubSub) connection() (*amqp.Connection, error) {
	p.subMu.Lock()
	defer p.subMu.Unlock()
	select {
	case <-p.closing:
		return nil, errors.New("the PubSub is closed")
	case <-p.killed: // the tests' Kill: as a dead process, it consumes no more
		return nil, errors.New("the PubSub is closed")
	default:
	}
	if p.subConn == nil || p.subConn.IsClosed() {
		conn, err := p.cfg.dial(p.cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("RabbitMQ at %s cannot be reached: %w", redacted(p.cfg.URL), err)
		}
		p.subConn = conn
	}
	return p.subConn, nil
}

// Close ends the subscriptions (what they hold and was not acknowledged
// goes back to the queue, in place), then closes the connections.
func (p *PubSub) Close() error {
	p.subMu.Lock() // a subscription starting meanwhile sees it closed, or is waited for
	p.closeOnce.Do(func() { close(p.closing) })
	p.subMu.Unlock()
	p.subs.Wait()
	p.subMu.Lock()
	var err error
	if p.subConn != nil && !p.subConn.IsClosed() {
		err = p.subConn.Close()
	}
	p.subConn = nil
	p.subMu.Unlock()
	if errors.Is(err, amqp.ErrClosed) {
		err = nil
	}
	return errors.Join(err, p.pub.close())
}

// redacted is u without its password.
func redacted(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(an unparsable URL)"
	}
	return parsed.Redacted()
}
