package kafkatest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The crash tests, on PostgreSQL and Kafka (kfake in this process, over
// TCP; the killed processes are children):
//
//   - Producer: children run commands under the unit of work while their
//     relay sends the outbox's batches to Kafka (PublishBatch), and are
//     killed with SIGKILL at random moments; the consumer, in this
//     process, handles through the inbox.
//   - Consumer: this process publishes keyed orders; children consume
//     them through the inbox and are killed.
//
// Afterwards: every committed order was handled, each one's effect once,
// no rolled-back one ever was, each key's effects in order, and the raw
// duplicates within the stated bound.

const (
	crashRounds = 5
	crashKeys   = 7
	relayBatch  = 100 // the relay's default BatchSize
)

// Placed is the crash tests' event: an order, keyed by its customer.
type Placed struct {
	ID       int64  `json:"id"`
	Customer string `json:"customer"`
}

// Place is the producer's command.
type Place struct{ ID int64 }

type placedFunc func(context.Context, Placed) error

func (f placedFunc) Handle(ctx context.Context, e Placed) error { return f(ctx, e) }

type placeFunc func(context.Context, Place) error

func (f placeFunc) Handle(ctx context.Context, c Place) error { return f(ctx, c) }

func customerOf(id int64) string { return "c" + strconv.FormatInt(id%crashKeys, 10) }

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test kills processes; not with -short")
	}
	t.Run("Producer", func(t *testing.T) { crash(t, "producer") })
	t.Run("Consumer", func(t *testing.T) { crash(t, "consumer") })
}

func crash(t *testing.T, killed string) {
	d := outboxtest.Open(t, fxoutbox.PostgreSQL)
	for _, ddl := range []string{
		"CREATE TABLE orders (id BIGINT PRIMARY KEY)",
		"CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, order_id BIGINT NOT NULL, customer TEXT NOT NULL)",
		"CREATE TABLE deliveries (order_id BIGINT NOT NULL)",
	} {
		_, err := d.DB.Exec(ddl)
		require.NoError(t, err)
	}
	c := newCluster(t)
	topic, group := name(t, "orders"), name(t, "billing")
	env := map[string]string{
		"FXCQRS_CRASH_KILLED":  killed,
		"FXCQRS_CRASH_DSN":     d.DSN,
		"FXCQRS_CRASH_TOPIC":   topic,
		"FXCQRS_CRASH_GROUP":   group,
		"FXCQRS_CRASH_BROKERS": c.ListenAddrs()[0] + "," + c.ListenAddrs()[1] + "," + c.ListenAddrs()[2],
	}
	admin := newPubSub(t, c, "")
	require.NoError(t, admin.Provision(t.Context(), topic))

	h := crashtest.Harness{Child: "TestCrashChild", Rounds: crashRounds, Env: env}
	switch killed {
	case "producer":
		stop := billing(t, d.DB, c.ListenAddrs(), topic, group, 0)
		defer stop()
		h.Run(t)
	case "consumer":
		// The orders, committed and published ahead; each round's child
		// joins the group once the killed one's session has expired.
		const n = 3000
		ctx := t.Context()
		for id := int64(1); id <= n; id++ {
			_, err := d.DB.ExecContext(ctx, "INSERT INTO orders (id) VALUES ($1)", id)
			require.NoError(t, err)
		}
		raw, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
		require.NoError(t, err)
		recs := make([]*kgo.Record, 0, n)
		for id := int64(1); id <= n; id++ {
			recs = append(recs, placedRecord(topic, id))
		}
		require.NoError(t, raw.ProduceSync(ctx, recs...).FirstErr())
		raw.Close()
		h.MinUp, h.MaxUp = 8*time.Second, 10*time.Second // the session timeout (6s), then some handling
		h.Run(t)
	}

	committed := idsOf(t, d.DB, "SELECT id FROM orders")
	require.NotEmpty(t, committed)
	eventually(t, "every committed order's effect", func() bool {
		return len(idsOf(t, d.DB, "SELECT DISTINCT order_id FROM effects")) >= len(committed)
	})
	if killed == "producer" {
		for _, id := range committed {
			assert.NotZero(t, id%5, "order %d was to roll back, and committed", id)
		}
	}
	report, err := crashtest.CheckOutbox(context.Background(), d.DB, crashtest.Promises{
		Committed: "SELECT id FROM orders", Deliveries: "SELECT order_id FROM deliveries", Effects: "SELECT order_id FROM effects",
	})
	require.NoError(t, err)
	// Each key's effects in the order its orders were placed.
	wrong, last := 0, map[string]int64{}
	rows, err := d.DB.Query("SELECT order_id, customer FROM effects ORDER BY seq")
	require.NoError(t, err)
	for rows.Next() {
		var (
			id int64
			k  string
		)
		require.NoError(t, rows.Scan(&id, &k))
		if id < last[k] {
			wrong++
		}
		last[k] = max(last[k], id)
	}
	require.NoError(t, rows.Close())
	assert.Zero(t, wrong, "effects of a key in the wrong order")
	if killed == "producer" {
		// A kill between Kafka's acknowledgement and the relay's DELETE
		// sends that batch again: at most one batch per lane (1) per kill.
		assert.LessOrEqual(t, report.Duplicates, crashRounds*relayBatch, "at most one batch of duplicates per kill")
	}
	t.Logf("%s killed %d times: %d orders committed, %d delivered, %d raw duplicates, %d effects",
		killed, crashRounds, report.Committed, report.Delivered, report.Duplicates, report.Effects)
}

func placedRecord(topic string, id int64) *kgo.Record {
	return &kgo.Record{
		Topic: topic, Key: []byte(customerOf(id)),
		Value: fmt.Appendf(nil, `{"id":%d,"customer":%q}`, id, customerOf(id)),
		Headers: []kgo.RecordHeader{
			{Key: "_watermill_message_uuid", Value: []byte("order-" + strconv.FormatInt(id, 10))},
			{Key: fxbus.MetadataKey, Value: []byte(customerOf(id))},
		},
	}
}

func idsOf(t testing.TB, db *sql.DB, query string) []int64 {
	t.Helper()
	rows, err := db.Query(query)
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

// billing is the consumer: through the inbox, each order's effect once;
// every delivery recorded apart, duplicates included. It returns stop.
func billing(t testing.TB, db *sql.DB, brokers []string, topic, group string, io time.Duration) func() {
	ps, err := kafkabus.New(kafkabus.Config{
		Brokers: brokers, Group: group, RebalanceTimeout: 10 * time.Second,
		Options: []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(time.Second)},
	})
	require.NoError(t, err)
	b, err := fxbus.New(fxbus.Config{Publisher: ps, Subscriber: ps}, nil,
		[]fxbus.Subscription{fxbus.NewSubscription[Placed](topic, fxbus.InOrder(), fxbus.InFlight(8))})
	require.NoError(t, err)
	o, err := fxoutbox.New(db, b, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Inbox: true}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}},
		fxcqrs.WithEventHandlers(placedFunc(func(ctx context.Context, e Placed) error {
			time.Sleep(io) // the handler's other I/O, not a synchronisation: it keeps a round's consumer busy until it is killed
			_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO effects (order_id, customer) VALUES ($1, $2)", e.ID, e.Customer)
			return err
		})),
		fxcqrs.WithMiddleware(fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
			if e, ok := call.Message.(Placed); ok && fxbus.MessageID(ctx) != "" {
				if _, err := db.ExecContext(ctx, "INSERT INTO deliveries (order_id) VALUES ($1)", e.ID); err != nil {
					return nil, err
				}
			}
			return next(ctx)
		}), fxcqrs.KindEvent), o.UnitOfWork()))
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background(), m))
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = b.Stop(context.Background())
			_ = m.Stop(context.Background())
			_ = ps.Close()
		})
	}
}

// TestCrashChild is a killed process of TestCrash; it does nothing
// unless TestCrash started it.
func TestCrashChild(t *testing.T) {
	mode := crashtest.Mode()
	if mode == "" {
		t.Skip("started by TestCrash only")
	}
	db, err := sql.Open("pgx", os.Getenv("FXCQRS_CRASH_DSN"))
	require.NoError(t, err)
	defer db.Close()
	topic, group := os.Getenv("FXCQRS_CRASH_TOPIC"), os.Getenv("FXCQRS_CRASH_GROUP")
	brokers := splitComma(os.Getenv("FXCQRS_CRASH_BROKERS"))

	if os.Getenv("FXCQRS_CRASH_KILLED") == "consumer" {
		stop := billing(t, db, brokers, topic, group, 20*time.Millisecond)
		if mode == crashtest.Drain {
			n := len(idsOf(t, db, "SELECT id FROM orders"))
			// Most of the orders are left to the drain: at 20ms each, 8 at
			// a time, under -race on a loaded machine that outlasts wait.
			eventuallyWithin(t, drainWait, "every order's effect", func() bool {
				return len(idsOf(t, db, "SELECT DISTINCT order_id FROM effects")) == n
			})
			stop()
			return
		}
		crashtest.Ready()
		select {} // until killed
	}

	ps, err := kafkabus.New(kafkabus.Config{Brokers: brokers})
	require.NoError(t, err)
	b, err := fxbus.New(fxbus.Config{Publisher: ps}, []fxbus.Routing{
		fxbus.NewRoute[Placed](topic, fxbus.KeyBy(func(e Placed) string { return e.Customer })),
	}, nil)
	require.NoError(t, err)
	// A short lease: each round's relay waits for the killed one's to
	// expire before it takes the topic over.
	o, err := fxoutbox.New(db, b, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Inbox: true, Relay: fxoutbox.RelayConfig{
		PollInterval: 20 * time.Millisecond, Lease: 500 * time.Millisecond,
	}}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(placeFunc(func(ctx context.Context, c Place) error {
			if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO orders (id) VALUES ($1)", c.ID); err != nil {
				return err
			}
			fxcqrs.Emit(ctx, Placed{ID: c.ID, Customer: customerOf(c.ID)})
			if c.ID%5 == 0 {
				return errors.New("rolled back on purpose")
			}
			return nil
		})))
	require.NoError(t, err)
	o.DeliverTo(m)
	require.NoError(t, o.Start(context.Background()))
	if mode == crashtest.Drain {
		eventually(t, "the outbox drained", func() bool { return outboxtest.Count(t, db, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 })
		_ = o.Stop(context.Background())
		_ = m.Stop(context.Background())
		_ = ps.Close()
		return
	}
	crashtest.Ready()
	for id := int64(crashtest.Round()) * 1_000_000; ; id++ { // until killed
		_ = fxcqrs.Exec(context.Background(), m, Place{ID: id})
	}
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := range len(s) + 1 {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}
