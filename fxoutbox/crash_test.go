package fxoutbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	nc "github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The crash test: a producer process (this test binary, re-executed) runs
// commands under the unit of work while its relay forwards; it is killed
// with SIGKILL at random moments, five times, restarted each time, and
// finally left to drain. Every fifth command fails on purpose after
// writing, so its transaction rolls back. Afterwards: every committed
// order was delivered, no rolled-back one ever was, and after the inbox
// each order's effect happened exactly once. Raw duplicates are counted:
// a kill sends again what the relay had published and not yet deleted
// (it deletes once per window, RelayConfig.ProgressInterval), at most
// ProgressRows + BatchSize - 1 rows per kill and lane.
//
// Over a real broker the consumer lives in this process; with SQLite and
// the in-process broker it lives in the producer (the broker dies with
// it), and the relay's redelivery after a restart is what brings the lost
// messages back.

const crashRounds = 5

// FollowUp is the command each order of the durable crash test schedules;
// DueNs is when it is due, by the wall clock the child's outbox uses.
type FollowUp struct {
	ID    int
	DueNs int64
}

// relayBatch and relayProgressRows are the relay's default BatchSize and
// ProgressRows, which the child keeps; its topic is one lane.
const (
	relayBatch        = 100
	relayProgressRows = 1000
)

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test kills processes; not with -short")
	}
	t.Parallel()
	for _, tc := range []struct {
		dialect fxoutbox.Dialect
		broker  string
	}{
		{fxoutbox.PostgreSQL, "nats"},
		{fxoutbox.MySQL, "nats"},
		{fxoutbox.PostgreSQL, "amqp"},
		{fxoutbox.MySQL, "amqp"},
		{fxoutbox.PostgreSQL, "redis"},
		{fxoutbox.SQLite, ""},
		// Durable in-process delivery and scheduled commands: no broker,
		// the handlers run from rows in the producer itself.
		{fxoutbox.PostgreSQL, "durable"},
		{fxoutbox.MySQL, "durable"},
		{fxoutbox.SQLite, "durable"},
	} {
		name := tc.dialect.String() + "+" + tc.broker
		if tc.broker == "" {
			name = tc.dialect.String() + "+in-process"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			crash(t, openDatabase(t, tc.dialect), tc.broker)
		})
	}
}

// crashTables adds the test's own tables: orders (the producer's writes),
// effects (the consumer's, once per order thanks to the inbox), and
// deliveries (every delivery, duplicates included).
func crashTables(t testing.TB, db *sql.DB) {
	t.Helper()
	for _, ddl := range []string{
		"CREATE TABLE orders (id BIGINT PRIMARY KEY)",
		"CREATE TABLE effects (order_id BIGINT NOT NULL)",
		"CREATE TABLE deliveries (order_id BIGINT NOT NULL)",
		"CREATE TABLE followups (order_id BIGINT NOT NULL, late_ns BIGINT NOT NULL)",
	} {
		_, err := db.Exec(ddl)
		require.NoError(t, err)
	}
}

func crash(t *testing.T, d database, broker string) {
	crashTables(t, d.DB)
	topic := fmt.Sprintf("crash_%d", rand.Uint32())
	addr := ""
	switch broker {
	case "nats":
		addr = env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
		u, err := url.Parse(addr)
		require.NoError(t, err)
		reachable(t, "FXCQRS_NATS_URL", u.Host)
		provisionNATS(t, addr, topic)
	case "amqp":
		addr = env("FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
		u, err := url.Parse(addr)
		require.NoError(t, err)
		reachable(t, "FXCQRS_AMQP_URL", u.Host)
		t.Cleanup(func() { forgetAMQP(addr, topic) })
	case "redis":
		addr = env("FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
		reachable(t, "FXCQRS_REDIS_ADDR", addr)
		t.Cleanup(func() {
			c := redis.NewClient(&redis.Options{Addr: addr})
			_ = c.Del(context.Background(), topic).Err()
			_ = c.Close()
		})
	}
	if broker != "" && broker != "durable" {
		stop := consume(t, d, broker, addr, topic)
		defer stop()
	}
	crashtest.Harness{Child: "TestCrashChild", Rounds: crashRounds, Env: map[string]string{
		"FXCQRS_CRASH_DIALECT": d.Dialect.String(),
		"FXCQRS_CRASH_DSN":     d.DSN,
		"FXCQRS_CRASH_DRIVER":  d.Driver,
		"FXCQRS_CRASH_BROKER":  broker,
		"FXCQRS_CRASH_ADDR":    addr,
		"FXCQRS_CRASH_TOPIC":   topic,
	}}.Run(t)

	committed := ids(t, d.DB, "SELECT id FROM orders")
	require.NotEmpty(t, committed)
	if broker != "" && broker != "durable" {
		waitFor(t, func() bool { return len(ids(t, d.DB, "SELECT DISTINCT order_id FROM effects")) >= len(committed) })
	}
	if broker == "durable" {
		// Each committed order scheduled a follow-up command: it ran once,
		// never before its time, and none of a rolled-back order.
		followups := map[int64]int{}
		for _, id := range ids(t, d.DB, "SELECT order_id FROM followups") {
			followups[id]++
		}
		for _, id := range committed {
			assert.Equal(t, 1, followups[id], "order %d: its scheduled follow-up exactly once", id)
		}
		assert.Len(t, followups, len(committed), "no follow-up of an order that never committed")
		assert.Empty(t, ids(t, d.DB, "SELECT order_id FROM followups WHERE late_ns < 0"), "no follow-up ran before it was due")
	}
	for _, id := range committed {
		assert.NotZero(t, id%5, "order %d was to roll back, and committed", id)
	}
	// The outbox's promises, by the kit every service can use.
	report, err := crashtest.CheckOutbox(context.Background(), d.DB, crashtest.Promises{
		Committed: "SELECT id FROM orders", Deliveries: "SELECT order_id FROM deliveries", Effects: "SELECT order_id FROM effects",
	})
	require.NoError(t, err)
	dups := report.Duplicates
	// A kill sends again the rows the relay had published and not yet
	// deleted: at most ProgressRows + BatchSize - 1 of its one lane per
	// kill reach the consumer again (which redelivers on its own failures
	// too).
	assert.LessOrEqual(t, dups, crashRounds*(relayProgressRows+relayBatch-1),
		"at most ProgressRows + BatchSize - 1 duplicates per kill and lane")
	if broker == "nats" {
		// JetStream drops a batch sent again by message id (natsjs sets
		// Nats-Msg-Id): the stream holds each committed order once.
		conn, err := nc.Connect(addr)
		require.NoError(t, err)
		defer conn.Close()
		js, err := conn.JetStream()
		require.NoError(t, err)
		info, err := js.StreamInfo(topic)
		require.NoError(t, err)
		assert.Equal(t, uint64(len(committed)), info.State.Msgs, "one message in the stream per committed order: no relay duplicate")
	}
	t.Logf("%d kills: %d orders committed, %d delivered, %d raw duplicates, %d effects", crashRounds, report.Committed, report.Delivered, dups, report.Effects)
}

// ids runs query (with args) and returns its one integer column.
func ids(t testing.TB, db *sql.DB, query string, args ...any) []int64 {
	t.Helper()
	rows, err := db.Query(query, args...)
	require.NoError(t, err)
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		out = append(out, id)
	}
	require.NoError(t, rows.Err())
	return out
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// provisionNATS makes the topic's stream and the consumer group's durable
// consumer ahead (see the bus module's documentation on why).
func provisionNATS(t testing.TB, addr, topic string) {
	t.Helper()
	conn, err := nc.Connect(addr)
	require.NoError(t, err)
	defer conn.Close()
	js, err := conn.JetStream()
	require.NoError(t, err)
	_, err = js.AddStream(&nc.StreamConfig{Name: topic, Subjects: []string{topic}})
	require.NoError(t, err)
	_, err = js.AddConsumer(topic, &nc.ConsumerConfig{
		Durable: "billing", DeliverSubject: nc.NewInbox(), DeliverGroup: "billing",
		DeliverPolicy: nc.DeliverAllPolicy, AckPolicy: nc.AckExplicitPolicy, AckWait: 2 * time.Second,
	})
	require.NoError(t, err)
	dropStreamAtCleanup(t, addr, topic)
}

// natsPubSub is the bus's own JetStream publisher and subscriber, on the
// group the test provisions.
func natsPubSub(addr string) (message.Publisher, message.Subscriber, error) {
	ps, err := natsjs.New(natsjs.Config{URL: addr, Group: "billing", AckWait: 5 * time.Second})
	return ps, ps, err
}

// billing is the consumer: with the inbox, each order's effect is
// recorded once; every delivery is recorded apart, duplicates included.
func billing(db *sql.DB, d fxoutbox.Dialect) fxcqrs.Option {
	return fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
		if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, d.Rebind("INSERT INTO effects (order_id) VALUES (?)"), e.ID); err != nil {
			return err
		}
		return nil
	}))
}

// deliveryLog records each delivery outside any transaction, before the
// inbox decides: the raw count, duplicates included.
func deliveryLog(db *sql.DB, d fxoutbox.Dialect) fxcqrs.Middleware {
	return fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
		if e, ok := call.Message.(OrderPlaced); ok && fxbus.MessageID(ctx) != "" {
			if _, err := db.ExecContext(ctx, d.Rebind("INSERT INTO deliveries (order_id) VALUES (?)"), e.ID); err != nil {
				return nil, err
			}
		}
		return next(ctx)
	}), fxcqrs.KindEvent)
}

// brokerPubSub opens a publisher and a subscriber (of the billing group)
// on broker at addr.
func brokerPubSub(broker, addr string) (message.Publisher, message.Subscriber, error) {
	switch broker {
	case "nats":
		return natsPubSub(addr)
	case "redis":
		ps, err := redisbus.New(redisbus.Config{Addr: addr, Group: "billing"})
		return ps, ps, err
	}
	// The bus's RabbitMQ preset: publisher confirms on pooled channels.
	ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "billing"})
	return ps, ps, err
}

// forgetAMQP deletes the test's queue and exchange.
func forgetAMQP(addr, topic string) {
	conn, err := amqp.Dial(addr)
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(topic+"_billing", false, false, false)
		_ = ch.ExchangeDelete(topic, false, false)
		_ = ch.Close()
	}
}

// consume runs the consumer in this process, over the broker.
func consume(t *testing.T, d database, broker, addr, topic string) (stop func()) {
	t.Helper()
	pub, sub, err := brokerPubSub(broker, addr)
	require.NoError(t, err)
	b, err := fxbus.New(fxbus.Config{Publisher: pub, Subscriber: sub}, nil,
		[]fxbus.Subscription{fxbus.NewSubscription[OrderPlaced](topic)})
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect, Inbox: true}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, billing(d.DB, d.Dialect),
		fxcqrs.WithMiddleware(deliveryLog(d.DB, d.Dialect), o.UnitOfWork()))
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background(), m))
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = b.Stop(context.Background())
			_ = m.Stop(context.Background())
			_ = sub.Close()
			_ = pub.Close()
		})
	}
}

// TestCrashChild is the producer process of TestCrash; it does nothing
// unless TestCrash started it.
func TestCrashChild(t *testing.T) {
	mode := crashtest.Mode()
	if mode == "" {
		t.Skip("started by TestCrash only")
	}
	dialect := map[string]fxoutbox.Dialect{"postgresql": fxoutbox.PostgreSQL, "mysql": fxoutbox.MySQL, "sqlite": fxoutbox.SQLite}[os.Getenv("FXCQRS_CRASH_DIALECT")]
	db, err := outboxtest.Database{Dialect: dialect, Driver: os.Getenv("FXCQRS_CRASH_DRIVER"), DSN: os.Getenv("FXCQRS_CRASH_DSN")}.Pool()
	require.NoError(t, err)
	defer db.Close()
	topic := os.Getenv("FXCQRS_CRASH_TOPIC")

	var (
		pub  message.Publisher
		sub  message.Subscriber
		subs []fxbus.Subscription
		opts []fxcqrs.Option
	)
	durable := os.Getenv("FXCQRS_CRASH_BROKER") == "durable"
	var deliverables []fxoutbox.Deliverable
	routes := []fxbus.Routing{fxbus.NewRoute[OrderPlaced](topic)}
	switch broker := os.Getenv("FXCQRS_CRASH_BROKER"); {
	case durable:
		// No broker: OrderPlaced's handler runs from its row, and each
		// order schedules a follow-up command 0–50 ms later.
		routes = nil
		deliverables = []fxoutbox.Deliverable{fxoutbox.DurableEvent[OrderPlaced](), fxoutbox.ScheduledCommand[FollowUp]()}
		opts = append(opts, billing(db, dialect), fxcqrs.WithMiddleware(deliveryLog(db, dialect)),
			fxcqrs.WithCommandHandlers(commandFunc[FollowUp](func(ctx context.Context, c FollowUp) error {
				_, err := fxoutbox.Tx(ctx).ExecContext(ctx, dialect.Rebind("INSERT INTO followups (order_id, late_ns) VALUES (?, ?)"),
					c.ID, time.Now().UnixNano()-c.DueNs)
				return err
			})))
	case broker != "":
		var unused message.Subscriber
		pub, unused, err = brokerPubSub(broker, os.Getenv("FXCQRS_CRASH_ADDR"))
		require.NoError(t, err)
		if both, ok := pub.(message.Subscriber); !ok || both != unused { // on NATS one PubSub is both
			_ = unused.Close() // the consumer is the parent's
		}
	default:
		// The in-process broker: the consumer lives here, and dies here.
		gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
		pub, sub = gc, gc
		subs = []fxbus.Subscription{fxbus.NewSubscription[OrderPlaced](topic)}
		opts = append(opts, billing(db, dialect), fxcqrs.WithMiddleware(deliveryLog(db, dialect)))
	}
	b, err := fxbus.New(fxbus.Config{Publisher: pub, Subscriber: sub}, routes, subs)
	require.NoError(t, err)
	// A short lease: each round's relay waits for the killed one's to
	// expire before it takes the topic over.
	o, err := fxoutbox.New(db, b, fxoutbox.Config{Dialect: dialect, Inbox: true, Deliverables: deliverables, Relay: fxoutbox.RelayConfig{
		PollInterval: 20 * time.Millisecond,
		Lease:        500 * time.Millisecond,
	}}, nil)
	require.NoError(t, err)
	opts = append(opts,
		fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, dialect.Rebind("INSERT INTO orders (id) VALUES (?)"), c.ID); err != nil {
				return err
			}
			fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
			if durable {
				due := time.Now().Add(time.Duration(c.ID%50) * time.Millisecond)
				if _, err := fxoutbox.Schedule(ctx, due, FollowUp{ID: c.ID, DueNs: due.UnixNano()}); err != nil {
					return err
				}
			}
			if c.ID%5 == 0 {
				return errors.New("rolled back on purpose")
			}
			return nil
		})),
	)
	m, err := fxcqrs.New(fxcqrs.Config{}, opts...)
	require.NoError(t, err)
	o.DeliverTo(m)
	require.NoError(t, o.Start(context.Background()))
	if sub != nil {
		require.NoError(t, b.Start(context.Background(), m))
	}
	if mode == crashtest.Drain {
		waitFor(t, func() bool {
			return count(t, db, "SELECT COUNT(*) FROM fxcqrs_outbox")+count(t, db, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled") == 0
		})
		_ = b.Stop(context.Background())
		_ = o.Stop(context.Background())
		_ = m.Stop(context.Background())
		if pub != nil {
			_ = pub.Close()
		}
		return
	}
	crashtest.Ready()
	for id := crashtest.Round() * 1_000_000; ; id++ { // until killed
		_ = fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: id})
	}
}
