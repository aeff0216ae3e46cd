// Package natsjs is NATS JetStream for fxbus, on the official client
// (nats.go): a Watermill publisher and subscriber with the settings a
// service needs and nothing to choose wrong. It is a package of its own so
// that only its users compile the NATS client.
//
//	ps, err := natsjs.New(natsjs.Config{URL: "nats://127.0.0.1:4222", Group: "billing"})
//	fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber))))
//
// The PubSub is an fxbus.Broker, an fxbus.Provisioner and an
// fxbus.FlowSubscriber: see [PubSub.Capabilities].
//
// # Topics and streams
//
// A topic is a NATS subject without wildcards ("payments.confirmed"); it
// is kept in a stream of its own, named after it with each dot made an
// underscore ("payments_confirmed"), since a stream's name may hold no
// dot. [PubSub.CheckTopic] refuses a topic no stream can take (a space,
// a wildcard, a path separator, an empty token) and a second topic that
// would share a first one's stream ("a.b" after "a_b"), naming the topic
// and the rule: the bus checks every topic it is given when it is made.
//
// Provisioning is explicit: [PubSub.Provision] makes the topics' streams,
// and the bus provisions every topic its routes, subscriptions and dead
// letters declare when it starts. Publish to a topic nobody provisioned
// fails naming it (a mistyped topic no longer makes a stream that nobody
// reads); a stream another process made counts, once seen on the server.
// The group's durable consumer is made when a subscription starts, and
// reads the stream from its first message: nothing published before is
// missed, and a service that only publishes leaves no idle consumer.
//
// # Publishing
//
// Publish waits for JetStream's acknowledgement of each message and sets
// Nats-Msg-Id to the message's id, so that JetStream drops a duplicate
// published again within the stream's duplicate window (a relay killed
// between publish and delete); PublishBatch publishes a batch at once and
// says which prefix JetStream took. A payload above MaxPayload (the
// server's max_payload, 1 MiB by default, less 8 KiB for the headers)
// fails before it is sent, naming the limit. Metadata travels as NATS
// headers, the payload as the message's data: a consumer in another
// language reads both.
//
// # Consuming
//
// Each subscription pulls from the group's durable consumer on the
// topic's stream (explicit acknowledgement, AckWait, MaxDeliver), which
// every replica of the service shares: each message goes to one replica.
// It never holds more than its InFlight messages (fxbus.InFlight:
// handed over, or waiting behind their key) between their delivery and
// their ack or nack: it asks JetStream for no more, and JetStream keeps
// the rest. While it holds a message it tells JetStream, every AckWait/4,
// that the message is in progress: a handler that runs longer than
// AckWait keeps its message instead of its being delivered again beside
// it. A message is acknowledged when the handler acks it, and nacked
// (redelivered at once, before newer messages) when it nacks it.
//
// # Order per key
//
// With fxbus.InOrder, a key's messages are handed over one at a time, in
// stream order, and a key's order holds, for one consuming process at a
// time, through:
//   - a nack: the key's messages held behind the nacked one are nacked
//     after it, in order, and a later message of the key that arrives
//     before the nacked one is back is nacked too; JetStream redelivers
//     nacked messages in the order of their nacks, before new ones, so
//     none overtakes it;
//   - an orderly stop: once the handlers in flight are done, what the
//     subscription holds is given back (nacked) in stream order, whatever
//     order the handlers nacked in;
//   - a kill: when a subscription starts and finds messages delivered and
//     not acknowledged while no other process consumes from the consumer
//     (the one that held them died), it remakes the consumer from its ack floor +
//     1, so that everything after the floor is delivered again, in stream
//     order, before anything newer. Messages that were handled after the
//     floor come again too: the inbox (fxoutbox) skips them, so give an
//     InOrder subscription the inbox. fxbus.InFlight(1) is in order the
//     same way, without InOrder (the bus gives the adapter its InFlight
//     through SubscribeFlow; Subscribe alone holds up to 64).
//
// Several replicas that consume one topic of one lane share its
// consumer and split a key's messages between them: order per key is not
// kept across them (give the topic lanes, see below, or run one at a
// time: stop the old process before the new one starts). Every message is still
// handled, at least once. A subscription never remakes the consumer
// under another process that consumes from it: each subscription answers
// on a presence subject of its group and topic until it has given back
// what it held, and a starting one asks there, and looks for open pulls,
// before it remakes (a process whose InFlight is reached pulls nothing:
// JetStream alone cannot tell it from a dead one). A process that
// vanished without closing its connection (a network cut) counts as
// consuming until the server notices: its messages come back after
// AckWait, behind newer ones; so does a message lost in transit during a
// reconnection. A subscription that learns the consumer was deleted (its
// pull is answered so) stops acknowledging what it held: the new
// consumer delivers it again.
//
// A server bug to know: NATS before 2.10.14 (the 2.9 line included) can
// lose a redelivery it takes while the pull requests waiting are ones
// whose subscriber just left, and deliver the next message twice
// instead (nats-server #5305, "delivery count going backwards"): the lost
// one comes back after AckWait. Here it shows when a subscription stops
// with a pull open while another process of its group consumes: a
// message it gave back can reach the other process after its key's next
// one. A restart of the one consuming process is not affected (the
// consumer is remade from its ack floor).
//
// # Lanes: order per key across replicas
//
// With Config.Lanes (or TopicLanes) above 1, a keyed message goes to its
// lane's subject, "<topic>._lane.<n>" (fxbus.LaneOf; lane 0 is the topic
// itself), and a subscription with fxbus.InOrder shares the topic's
// lanes with its group's replicas: each lane is owned by one replica at
// a time, under a lease in the key-value bucket fxcqrs_ownership
// (Config.Lease, 3s, renewed every Lease/6), and consumed through a
// durable consumer of its own, "<group>_lane<n>", filtered on the lane's
// subject. A replica that takes a lane remakes its consumer from its ack
// floor + 1, so that what the previous owner held comes first; one that
// gives a lane up (another replica joined, or it stops) drains it and
// gives back what it held before it gives back the lease; one that dies
// loses its lanes when their leases run out, to the others' next step.
// Past Lease less a quarter without a renewal, a replica sends no more
// acknowledgements of the lane and the inbox refuses its handlers'
// effects (fxbus.Fenced). Each lane holds up to InFlight/Lanes messages.
// The number of lanes is recorded in the key-value bucket fxcqrs_lanes
// when the topic is provisioned, and a process configured with another
// fails at start. See docs/replicas.md.
//
// # Upgrading
//
// natsjs made push consumers before (DeliverSubject set, joined as a
// queue group). The first subscription of the new code to find one
// remakes it as a pull consumer from its ack floor + 1: every message it
// had not acknowledged is delivered again, in order, nothing pending is
// lost, and messages handled after the floor come again (the inbox skips
// them). Stop every process of the old version first: one still bound
// to the push consumer receives nothing more.
//
// New connects, and fails naming the address when NATS cannot be
// reached: a service fails at start, not at its first message.
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
	"go.uber.org/zap"
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
	// Lanes is how many lanes a topic's keyed messages are spread over,
	// unless TopicLanes says otherwise: 1 by default (one lane, one
	// consumer per group). With more, a key's messages go to its lane's
	// subject (fxbus.LaneOf), and a subscription with fxbus.InOrder
	// shares the lanes with the group's other replicas, one owner per
	// lane at a time: a key's order holds across replicas (see the
	// package doc). One figure per topic for every producer and consumer:
	// Provision records it and refuses another.
	Lanes int
	// TopicLanes sets the number of lanes of some topics, by topic.
	TopicLanes map[string]int
	// Member names this process among its group's replicas, for the
	// lanes' leases. Default a random name per PubSub.
	Member string
	// Lease is how long a replica's lanes stay its own after its last
	// renewal (every Lease/6): a replica that dies leaves its lanes to
	// the others within Lease and one renewal. Default 3s.
	Lease time.Duration
	// Logger logs what goes wrong with the lanes' leases. Default none.
	Logger *zap.Logger
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
	sets    map[*laneSet]struct{}
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
	if err := checkLanes(&cfg); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
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
		subs: map[*subscription]struct{}{}, sets: map[*laneSet]struct{}{}, closing: make(chan struct{}),
	}, nil
}

// Capabilities states what the PubSub does: a key's order through a
// nack, a redelivery and a restart (one consuming process at a time, or
// with Config.Lanes one replica per lane at a time),
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

// CloudEventsBinding is NATS's protocol binding of CloudEvents: a route
// with fxbus.CloudEvents writes its attributes as "ce-" headers.
func (*PubSub) CloudEventsBinding() fxbus.CloudEventsBinding { return fxbus.CloudEventsNATS }

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
	sets := make([]*laneSet, 0, len(p.sets))
	for ls := range p.sets {
		sets = append(sets, ls)
	}
	p.mu.Unlock()
	for _, ls := range sets {
		ls.stop() // its lanes drained and given back, before the connection goes
	}
	for _, s := range subs {
		s.stop()
	}
	close(p.closing)
	for _, s := range subs {
		s.goroutines.Wait()
	}
	for _, ls := range sets {
		<-ls.ended
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
