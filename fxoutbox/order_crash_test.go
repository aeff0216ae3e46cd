package fxoutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/require"
)

// The order kill test, on NATS JetStream, RabbitMQ and Redis Streams:
// producers on two replicas run commands that emit keyed messages (24
// keys) through the outbox, their relays sharing the topic's 8 lanes; a
// consumer process, with InOrder, InFlight(32) and the inbox, handles
// them, each handling recorded in its transaction. Each producer replica
// is SIGKILLed three times and restarted; the consumer is SIGKILLed three
// times, and between its kills stops cleanly and starts again at seeded
// moments; last, each drains. Afterwards, per key, the handled effects
// are in the key's order (0 wrong-order pairs), none of a committed
// message is missing, and none happened twice.

type (
	// Keyed is the order tests' message: the Seq-th of its key.
	Keyed struct {
		Key string
		Seq int
	}
	// Bump is the order kill test's command: the next Keyed of Key.
	Bump struct{ Key string }
)

const (
	orderKeys        = 24
	orderLanes       = 8
	orderGroup       = "orders"
	orderProducerUps = 3 // kills of each producer replica
	orderConsumerUps = 3 // kills of the consumer
)

func TestOrderThroughKills(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test kills processes; not with -short")
	}
	t.Parallel()
	for _, broker := range orderBrokers {
		t.Run(broker, func(t *testing.T) {
			t.Parallel()
			orderThroughKills(t, broker)
		})
	}
}

func orderThroughKills(t *testing.T, broker string) {
	addr, topic := provisionOrder(t, broker)
	d := openDatabase(t, fxoutbox.PostgreSQL)
	orderTables(t, d.DB)
	seed := orderSeed(t)
	env := map[string]string{
		"FXCQRS_ORDER_DSN": d.DSN, "FXCQRS_ORDER_BROKER": broker,
		"FXCQRS_ORDER_ADDR": addr, "FXCQRS_ORDER_TOPIC": topic,
		"FXCQRS_ORDER_SEED": strconv.FormatUint(seed, 10),
	}
	// The three processes' harnesses at once, each killing its own (in
	// goroutines, not parallel subtests, which -parallel would queue).
	var wg sync.WaitGroup
	// The producers drain nothing of their own: the consumer's drain
	// relays what is left once both were killed a last time.
	killedProducers(t, &wg, env, seed, func(replica int) {
		_, err := d.DB.Exec("INSERT INTO done (replica) VALUES ($1)", replica)
		require.NoError(t, err)
	})
	h := crashtest.Harness{
		Child: "TestOrderConsumerChild", Rounds: orderConsumerUps, Seed: seed + 3,
		MinUp: 300 * time.Millisecond, MaxUp: 1200 * time.Millisecond,
		Env: map[string]string{"FXCQRS_ORDER_REPLICA": "2"},
	}
	for k, v := range env {
		h.Env[k] = v
	}
	wg.Go(func() { h.Run(goroutineTB{t}) })
	wg.Wait()
	if t.Failed() {
		return
	}
	if stream := sentOrder(t, broker, addr, topic); stream != nil { // the relays' side
		for k, seqs := range stream {
			for i := 1; i < len(seqs); i++ {
				if seqs[i] < seqs[i-1] {
					t.Errorf("the stream has key %s out of order: %v", k, seqs[max(0, i-6):min(len(seqs), i+6)])
				}
			}
		}
	}
	checkOrder(t, d.DB, fmt.Sprintf("%s, producers killed %d times each, the consumer %d times and stopped cleanly between",
		broker, orderProducerUps, orderConsumerUps))
}

// killedProducers runs two producer replicas (TestOrderProducerChild,
// replicas 0 and 1) in goroutines of wg, each SIGKILLed
// orderProducerUps times at moments drawn from seed and started again,
// with env (FXCQRS_ORDER_*); lastKill runs after each one's last kill.
func killedProducers(t *testing.T, wg *sync.WaitGroup, env map[string]string, seed uint64, lastKill func(replica int)) {
	for i := range 2 {
		h := crashtest.Harness{
			Child: "TestOrderProducerChild", Rounds: orderProducerUps, Seed: seed + uint64(i) + 1, NoDrain: true,
			MinUp: 500 * time.Millisecond, MaxUp: 1500 * time.Millisecond,
			Env: map[string]string{"FXCQRS_ORDER_REPLICA": strconv.Itoa(i)},
			AfterKill: func(round int) {
				if round == orderProducerUps {
					lastKill(i)
				}
			},
		}
		for k, v := range env {
			h.Env[k] = v
		}
		wg.Go(func() { h.Run(goroutineTB{t}) })
	}
}

// goroutineTB is t for a goroutine of the test's: a fatal failure is
// reported and ends that goroutine only (FailNow belongs to the test's
// own goroutine).
type goroutineTB struct{ testing.TB }

func (g goroutineTB) Fatalf(format string, args ...any) {
	g.Helper()
	g.Errorf(format, args...)
	runtime.Goexit()
}

func (g goroutineTB) Fatal(args ...any) {
	g.Helper()
	g.Error(args...)
	runtime.Goexit()
}

func (g goroutineTB) FailNow() {
	g.Fail()
	runtime.Goexit()
}

// orderTables adds the order tests' tables: each key's last sequence
// number (the producers' counter, bumped in the command's transaction),
// the handled effects in the order handled, and the producers that
// are done (killed a last time).
func orderTables(t testing.TB, db *sql.DB) {
	t.Helper()
	for _, ddl := range []string{
		"CREATE TABLE keyseq (k TEXT PRIMARY KEY, seq INT NOT NULL)",
		"CREATE TABLE handled (n BIGSERIAL PRIMARY KEY, k TEXT NOT NULL, seq INT NOT NULL)",
		"CREATE TABLE done (replica INT NOT NULL)",
	} {
		_, err := db.Exec(ddl)
		require.NoError(t, err)
	}
	for k := range orderKeys {
		_, err := db.Exec("INSERT INTO keyseq (k, seq) VALUES ($1, 0)", orderKey(k))
		require.NoError(t, err)
	}
}

func orderKey(k int) string { return fmt.Sprintf("k%02d", k) }

// orderSeed is the run's seed: FXCQRS_CRASH_SEED, else a random one,
// logged so that a failure can be replayed; the harnesses' and the
// children's seeds are drawn from it.
func orderSeed(t testing.TB) uint64 {
	seed := rand.Uint64()
	if s, err := strconv.ParseUint(os.Getenv("FXCQRS_CRASH_SEED"), 10, 64); err == nil && s != 0 {
		seed = s
	}
	t.Logf("order seed %d: FXCQRS_CRASH_SEED=%d replays this run (the harnesses' seeds below are drawn from it)", seed, seed)
	return seed
}

// TestOrderProducerChild is a producer replica of TestOrderThroughKills:
// it bumps random keys, four at once, each bump a command whose
// transaction writes the key's next Keyed to the outbox, while its relay
// sends the lanes it holds, until it is killed.
func TestOrderProducerChild(t *testing.T) {
	if crashtest.Mode() != crashtest.Work {
		t.Skip("started by TestOrderThroughKills only")
	}
	seed, _ := strconv.ParseUint(os.Getenv("FXCQRS_ORDER_SEED"), 10, 64)
	replica, _ := strconv.Atoi(os.Getenv("FXCQRS_ORDER_REPLICA"))
	lanes, _ := strconv.Atoi(os.Getenv("FXCQRS_ORDER_BROKER_LANES"))
	pace, err := time.ParseDuration(os.Getenv("FXCQRS_ORDER_PACE"))
	if err != nil {
		pace = 2 * time.Millisecond
	}
	orderProducer(t, orderDB(t), orderSource{
		Broker: os.Getenv("FXCQRS_ORDER_BROKER"), Addr: os.Getenv("FXCQRS_ORDER_ADDR"),
		Topic: os.Getenv("FXCQRS_ORDER_TOPIC"), BrokerLanes: lanes,
	}, rand.New(rand.NewPCG(seed, uint64(1000*replica+10*crashtest.Round()))), pace)
	crashtest.Ready()
	select {} // until killed
}

// orderSource is where a producer replica's relay publishes: a topic on a
// broker, of BrokerLanes lanes in the broker (natsjs, amqpbus, redisbus
// TopicLanes; 0 for none).
type orderSource struct {
	Broker, Addr, Topic string
	BrokerLanes         int
}

// orderProducer starts a producer replica on db: four goroutines bump
// random keys, each every pace, each bump a command whose transaction
// writes the key's next Keyed to the outbox, while its relay sends the
// lanes it holds. It returns a function that stops the bumps (once they
// have stopped, the relay goes on until its outbox is stopped).
func orderProducer(t testing.TB, db *sql.DB, src orderSource, rnd *rand.Rand, pace time.Duration) (*fxoutbox.Outbox, func()) {
	t.Helper()
	o := orderRelay(t, db, src)
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(commandFunc[Bump](func(ctx context.Context, c Bump) error {
			// The key's row is locked until the commit: a key's rows
			// enter the outbox in its order, whichever replica writes.
			var seq int
			if err := fxoutbox.Tx(ctx).QueryRowContext(ctx, "UPDATE keyseq SET seq = seq + 1 WHERE k = $1 RETURNING seq", c.Key).Scan(&seq); err != nil {
				return err
			}
			fxcqrs.Emit(ctx, Keyed{Key: c.Key, Seq: seq})
			return nil
		})),
		fxcqrs.WithMiddleware(o.UnitOfWork()))
	require.NoError(t, err)
	require.NoError(t, o.Start(context.Background()))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		r := rand.New(rand.NewPCG(rnd.Uint64(), rnd.Uint64()))
		wg.Go(func() {
			tick := time.NewTicker(pace) // pacing, not synchronisation
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				_ = fxcqrs.Exec(context.Background(), m, Bump{Key: orderKey(r.IntN(orderKeys))})
			}
		})
	}
	return o, sync.OnceFunc(func() { close(stop); wg.Wait() })
}

// orderRelay is the outbox of a producer replica: Keyed routed by its
// key, the relay on the topic's 8 lanes, with a short lease (a killed
// replica's lanes are taken over within it).
func orderRelay(t testing.TB, db *sql.DB, src orderSource) *fxoutbox.Outbox {
	t.Helper()
	var topicLanes map[string]int
	if src.BrokerLanes > 0 {
		topicLanes = map[string]int{src.Topic: src.BrokerLanes}
	}
	pub, err := orderLanedPublisher(src.Broker, src.Addr, topicLanes)
	require.NoError(t, err)
	b, err := fxbus.New(fxbus.Config{Publisher: pub}, []fxbus.Routing{
		fxbus.NewRoute[Keyed](src.Topic, fxbus.KeyBy(func(e Keyed) string { return e.Key })),
	}, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(db, b, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Relay: fxoutbox.RelayConfig{
		PollInterval: 20 * time.Millisecond, Lease: 500 * time.Millisecond, Lanes: orderLanes,
	}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return o
}

// TestOrderConsumerChild is the consumer process of
// TestOrderThroughKills: a Work child stops cleanly and starts again at
// seeded moments until it is killed; the Drain child also relays what
// the producers left in the outbox, and consumes until both producers
// are done and every message committed was handled.
func TestOrderConsumerChild(t *testing.T) {
	mode := crashtest.Mode()
	if mode == "" {
		t.Skip("started by TestOrderThroughKills only")
	}
	db := orderDB(t)
	seed, _ := strconv.ParseUint(os.Getenv("FXCQRS_ORDER_SEED"), 10, 64)
	rnd := rand.New(rand.NewPCG(seed, uint64(crashtest.Round())))
	for cycle := 0; ; cycle++ {
		c := orderConsumer(t, db)
		c.start()
		if cycle == 0 {
			crashtest.Ready()
		}
		if mode == crashtest.Drain {
			o := orderRelay(t, db, orderSource{Broker: os.Getenv("FXCQRS_ORDER_BROKER"), Addr: os.Getenv("FXCQRS_ORDER_ADDR"), Topic: os.Getenv("FXCQRS_ORDER_TOPIC")})
			require.NoError(t, o.Start(context.Background()))
			waitFor(t, func() bool {
				if count(t, db, "SELECT COUNT(*) FROM done") < 2 || count(t, db, "SELECT COUNT(*) FROM fxcqrs_outbox") > 0 {
					return false
				}
				return count(t, db, "SELECT COUNT(*) FROM handled") >= count(t, db, "SELECT SUM(seq) FROM keyseq")
			})
			require.NoError(t, o.Stop(context.Background()))
			c.stop()
			return
		}
		// A seeded moment of the work, then a clean stop and a new start.
		time.Sleep(time.Duration(100+rnd.IntN(600)) * time.Millisecond)
		c.stop()
	}
}

// checkOrder counts, per key, every pair of handled effects in the wrong
// order, the committed messages never handled and those handled twice,
// and fails t on any.
func checkOrder(t *testing.T, db *sql.DB, what string) {
	t.Helper()
	last := map[string]int{} // by key: the last seq committed
	rows, err := db.Query("SELECT k, seq FROM keyseq")
	require.NoError(t, err)
	total := 0
	for rows.Next() {
		var k string
		var seq int
		require.NoError(t, rows.Scan(&k, &seq))
		last[k] = seq
		total += seq
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	handled := map[string][]int{} // by key: seqs in the order they were handled
	rows, err = db.Query("SELECT k, seq FROM handled ORDER BY n")
	require.NoError(t, err)
	for rows.Next() {
		var k string
		var seq int
		require.NoError(t, rows.Scan(&k, &seq))
		handled[k] = append(handled[k], seq)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	wrong, lost, twice, effects := 0, 0, 0, 0
	for k, n := range last {
		seqs := handled[k]
		effects += len(seqs)
		seen := map[int]int{}
		for i, a := range seqs {
			seen[a]++
			for _, b := range seqs[i+1:] {
				if a > b {
					wrong++
				}
			}
			if i > 0 && seqs[i-1] > a {
				t.Logf("key %s out of order: handled %v", k, seqs[max(0, i-6):min(len(seqs), i+6)])
			}
		}
		for seq := 1; seq <= n; seq++ {
			switch seen[seq] {
			case 0:
				lost++
			case 1:
			default:
				twice++
			}
		}
	}
	t.Logf("%s: %d messages over %d keys, %d effects; %d wrong-order pairs, %d lost, %d twice",
		what, total, len(last), effects, wrong, lost, twice)
	require.Positive(t, total)
	if wrong+lost+twice > 0 || effects != total {
		t.Errorf("%d wrong-order pairs of a key's handled effects, %d messages never handled, %d handled twice (the inbox skips a redelivery); %d effects of %d messages",
			wrong, lost, twice, effects, total)
	}
}
