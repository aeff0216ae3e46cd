package fxoutbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A relaying replica killed with SIGKILL leaves its topic to another
// within the lease (4s) and a poll (1s): the test measures the gap from
// the kill to the first message written after it, on PostgreSQL and NATS
// JetStream, and logs it (about 5s on an idle machine). Its bound is 30s:
// wide enough that a machine busy with other work never reaches it (the
// gap includes the new replica's start), narrow enough to catch a
// takeover that waits for anything but the lease.
func TestTakeoverAfterKill(t *testing.T) {
	t.Parallel()
	addr := env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	u, err := url.Parse(addr)
	require.NoError(t, err)
	reachable(t, "FXCQRS_NATS_URL", u.Host)
	d := openDatabase(t, fxoutbox.PostgreSQL)
	topic := fmt.Sprintf("takeover_%d", rand.Uint32())
	provisionNATS(t, addr, topic)

	// The consumer: when each sequence number first arrived.
	consumer, err := natsjs.New(natsjs.Config{URL: addr, Group: "billing"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = consumer.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in, err := consumer.Subscribe(ctx, topic)
	require.NoError(t, err)
	var (
		mu      sync.Mutex
		arrived = map[int64]time.Time{}
	)
	go func() {
		for m := range in {
			var p struct{ Seq int64 }
			_ = json.Unmarshal(m.Payload, &p)
			mu.Lock()
			if _, ok := arrived[p.Seq]; !ok {
				arrived[p.Seq] = time.Now()
			}
			mu.Unlock()
			m.Ack()
		}
	}()

	// The producer: a row every 2ms, numbered, as units of work write them.
	var seq atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		insert := d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, ?)")
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			n := seq.Add(1)
			_, _ = d.DB.Exec(insert, topic, fmt.Sprintf("t-%d", n), fmt.Appendf(nil, `{"Seq":%d}`, n), `{}`)
		}
	})
	defer func() { close(stop); wg.Wait() }()

	var (
		killedAt  time.Time
		seqAtKill int64
	)
	crashtest.Harness{
		Child: "TestTakeoverChild", Rounds: 1, MinUp: time.Second, MaxUp: 1500 * time.Millisecond, NoDrain: true,
		Env: map[string]string{"FXCQRS_CRASH_DSN": d.DSN, "FXCQRS_CRASH_ADDR": addr},
		AfterKill: func(int) {
			killedAt, seqAtKill = time.Now(), seq.Load()
			mu.Lock()
			defer mu.Unlock()
			require.NotEmpty(t, arrived, "the killed relay was delivering")
		},
	}.Run(t)

	// Another replica, started once the first died.
	ps, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ps.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(t, err)
	require.NoError(t, o.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })

	var gap time.Duration
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for s, at := range arrived {
			if s > seqAtKill { // written after the kill: only the new owner sent it
				gap = at.Sub(killedAt)
				return true
			}
		}
		return false
	})
	t.Logf("delivery resumed %v after the relaying replica was killed", gap.Round(time.Millisecond))
	assert.Less(t, gap, 30*time.Second, "within the lease and a poll, with slack for a busy machine")
}

// TestTakeoverChild is the relaying replica TestTakeoverAfterKill kills.
func TestTakeoverChild(t *testing.T) {
	if crashtest.Mode() == "" {
		t.Skip("started by TestTakeoverAfterKill only")
	}
	relayUntilKilled(t, fxoutbox.RelayConfig{})
}

// relayUntilKilled is a crash test's relaying replica: a relay with cfg on
// FXCQRS_CRASH_DSN's PostgreSQL into FXCQRS_CRASH_ADDR's NATS, until the
// harness kills it.
func relayUntilKilled(t *testing.T, cfg fxoutbox.RelayConfig) {
	db, err := sql.Open("pgx", os.Getenv("FXCQRS_CRASH_DSN"))
	require.NoError(t, err)
	ps, err := natsjs.New(natsjs.Config{URL: os.Getenv("FXCQRS_CRASH_ADDR")})
	require.NoError(t, err)
	bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(db, bus, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Relay: cfg}, nil)
	require.NoError(t, err)
	require.NoError(t, o.Start(context.Background()))
	crashtest.Ready()
	select {} // until killed
}
