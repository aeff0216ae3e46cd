package fxoutbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The order crash test on NATS JetStream: the parent publishes keyed
// messages without pause (24 keys, each key's in order); a consumer
// process, with InOrder, InFlight(32) and the inbox, handles them, each
// handling recorded in its transaction. Each consumer process stops
// cleanly and starts again in itself at seeded moments, and is SIGKILLed
// at the harness's; a last one drains. Afterwards, per key, the handled
// effects are in the key's order (0 wrong-order pairs), none is missing,
// and none happened twice.

// Keyed is the order crash test's message: the Seq-th of its key.
type Keyed struct {
	Key string
	Seq int
}

const (
	orderKeys   = 24
	orderRounds = 5
)

func TestNATSOrderThroughRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test kills processes; not with -short")
	}
	t.Parallel()
	addr := env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	reachable(t, "FXCQRS_NATS_URL", hostOf(t, addr))
	d := openDatabase(t, fxoutbox.PostgreSQL)
	for _, ddl := range []string{
		"CREATE TABLE handled (n BIGSERIAL PRIMARY KEY, k TEXT NOT NULL, seq INT NOT NULL)",
		"CREATE TABLE published (total BIGINT NOT NULL)",
	} {
		_, err := d.DB.Exec(ddl)
		require.NoError(t, err)
	}
	topic := fmt.Sprintf("order_crash_%d", rand.Uint32())
	ps, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(t, err)
	defer func() { require.NoError(t, ps.Close()) }()
	require.NoError(t, ps.Provision(context.Background(), topic))
	dropStreamAtCleanup(t, addr, topic)

	// The producer: keyed messages until the last kill, about 300 a second.
	var (
		wg      sync.WaitGroup
		stop    = make(chan struct{})
		stopped sync.Once
		last    = make([]int, orderKeys) // by key: the last seq published
	)
	wg.Go(func() {
		tick := time.NewTicker(3 * time.Millisecond) // pacing, not synchronisation
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			k := i % orderKeys
			ev := Keyed{Key: fmt.Sprintf("k%02d", k), Seq: last[k] + 1}
			payload, _ := json.Marshal(ev)
			m := message.NewMessage(fmt.Sprintf("%s-%d", ev.Key, ev.Seq), payload)
			m.Metadata.Set(fxbus.MetadataName, "Keyed")
			m.Metadata.Set(fxbus.MetadataKey, ev.Key)
			if !assert.NoError(t, ps.Publish(topic, m)) {
				return
			}
			last[k] = ev.Seq
		}
	})
	endProducer := func() {
		stopped.Do(func() {
			close(stop)
			wg.Wait()
		})
	}
	defer endProducer()
	total := 0
	seed := rand.Uint64()
	if s, err := strconv.ParseUint(os.Getenv("FXCQRS_CRASH_SEED"), 10, 64); err == nil {
		seed = s
	}
	crashtest.Harness{
		Child: "TestNATSOrderChild", Rounds: orderRounds, Seed: seed,
		MinUp: 400 * time.Millisecond, MaxUp: 1500 * time.Millisecond,
		Env: map[string]string{
			"FXCQRS_ORDER_DSN": d.DSN, "FXCQRS_ORDER_DRIVER": d.Driver,
			"FXCQRS_ORDER_ADDR": addr, "FXCQRS_ORDER_TOPIC": topic,
			"FXCQRS_ORDER_SEED": strconv.FormatUint(seed, 10),
		},
		AfterKill: func(round int) {
			if round < orderRounds {
				return
			}
			// The last kill: the producer stops, and the drain child
			// consumes until every message was handled.
			endProducer()
			for _, n := range last {
				total += n
			}
			_, err := d.DB.Exec("INSERT INTO published (total) VALUES ($1)", total)
			require.NoError(t, err)
		},
	}.Run(t)

	handled := map[string][]int{} // by key: seqs in the order they were handled
	rows, err := d.DB.Query("SELECT k, seq FROM handled ORDER BY n")
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
		seqs := handled[fmt.Sprintf("k%02d", k)]
		effects += len(seqs)
		seen := map[int]int{}
		for i, a := range seqs {
			seen[a]++
			for _, b := range seqs[i+1:] {
				if a > b {
					wrong++
				}
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
	t.Logf("%d kills, each child stopping cleanly at seeded moments: %d messages over %d keys, %d effects; %d wrong-order pairs, %d lost, %d twice",
		orderRounds, total, orderKeys, effects, wrong, lost, twice)
	assert.Zero(t, wrong, "wrong-order pairs of a key's handled effects")
	assert.Zero(t, lost, "messages never handled")
	assert.Zero(t, twice, "messages handled twice (the inbox skips a redelivery)")
	assert.Equal(t, total, effects)
}

// TestNATSOrderChild is the consumer process of
// TestNATSOrderThroughRestarts; it does nothing unless that test started
// it. A Work child stops cleanly and starts again at seeded moments until
// it is killed; the Drain child consumes until every message published
// was handled.
func TestNATSOrderChild(t *testing.T) {
	mode := crashtest.Mode()
	if mode == "" {
		t.Skip("started by TestNATSOrderThroughRestarts only")
	}
	db, err := sql.Open(os.Getenv("FXCQRS_ORDER_DRIVER"), os.Getenv("FXCQRS_ORDER_DSN"))
	require.NoError(t, err)
	defer db.Close()
	seed, _ := strconv.ParseUint(os.Getenv("FXCQRS_ORDER_SEED"), 10, 64)
	rnd := rand.New(rand.NewPCG(seed, uint64(crashtest.Round())))
	for cycle := 0; ; cycle++ {
		stop := orderConsumer(t, db)
		if cycle == 0 {
			crashtest.Ready()
		}
		if mode == crashtest.Drain {
			waitFor(t, func() bool {
				var total, handled int
				_ = db.QueryRow("SELECT total FROM published").Scan(&total)
				_ = db.QueryRow("SELECT count(*) FROM handled").Scan(&handled)
				return total > 0 && handled >= total
			})
			stop()
			return
		}
		// A seeded moment of the work, then a clean stop and a new start.
		time.Sleep(time.Duration(100+rnd.IntN(600)) * time.Millisecond)
		stop()
	}
}

// orderConsumer starts the consumer: the bus on natsjs, InOrder and
// InFlight(32), the inbox, each handling recorded in its transaction.
func orderConsumer(t *testing.T, db *sql.DB) (stop func()) {
	t.Helper()
	ps, err := natsjs.New(natsjs.Config{URL: os.Getenv("FXCQRS_ORDER_ADDR"), Group: "orders", AckWait: 5 * time.Second})
	require.NoError(t, err)
	b, err := fxbus.New(fxbus.Config{Publisher: ps, Subscriber: ps}, nil, []fxbus.Subscription{
		fxbus.NewSubscription[Keyed](os.Getenv("FXCQRS_ORDER_TOPIC"), fxbus.InOrder(), fxbus.InFlight(32)),
	})
	require.NoError(t, err)
	o, err := fxoutbox.New(db, b, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Inbox: true}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithEventHandlers(eventFunc[Keyed](func(ctx context.Context, e Keyed) error {
			_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO handled (k, seq) VALUES ($1, $2)", e.Key, e.Seq)
			return err
		})),
		fxcqrs.WithMiddleware(o.UnitOfWork()))
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background(), m))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, b.Stop(ctx))
		require.NoError(t, m.Stop(ctx))
		require.NoError(t, ps.Close())
	}
}

func hostOf(t testing.TB, addr string) string {
	t.Helper()
	u, err := url.Parse(addr)
	require.NoError(t, err)
	return u.Host
}
