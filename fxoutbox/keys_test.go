package fxoutbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	nc "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// The events and commands of the order-per-key tests.
type (
	// Moved is the Seq'th event of Key.
	Moved struct {
		Key string
		Seq int
	}
	// MoveAll emits the Seq'th Moved of each of Keys.
	MoveAll struct {
		Seq  int
		Keys []string
	}
)

func moveKey(e Moved) string { return e.Key }

func keyNames(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("order-%d", i)
	}
	return keys
}

// moveAll is MoveAll's handler.
func moveAll() commandFunc[MoveAll] {
	return func(ctx context.Context, c MoveAll) error {
		for _, k := range c.Keys {
			fxcqrs.Emit(ctx, Moved{Key: k, Seq: c.Seq})
		}
		return nil
	}
}

// perKey records what the handlers got, per key, in order.
type perKey struct {
	mu   sync.Mutex
	seqs map[string][]int
}

func (p *perKey) add(e Moved) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seqs == nil {
		p.seqs = map[string][]int{}
	}
	p.seqs[e.Key] = append(p.seqs[e.Key], e.Seq)
}

func (p *perKey) of(key string) []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.seqs[key]...)
}

// firsts is each key's sequence numbers with every repeat of one already
// seen dropped (a redelivery the inbox would skip), and how many repeats.
func (p *perKey) firsts() (map[string][]int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]int{}
	repeats := 0
	for k, seqs := range p.seqs {
		seen := map[int]bool{}
		for _, s := range seqs {
			if seen[s] {
				repeats++
				continue
			}
			seen[s] = true
			out[k] = append(out[k], s)
		}
	}
	return out, repeats
}

// inOrder asserts that each key's first deliveries are 0, 1, … n-1: every
// pair of a key's messages in order, none missing.
func inOrder(t testing.TB, what string, got map[string][]int, keys []string, n int) {
	t.Helper()
	for _, k := range keys {
		seqs := got[k]
		require.Len(t, seqs, n, "%s: key %s got %d of %d", what, k, len(seqs), n)
		for i, s := range seqs {
			require.Equal(t, i, s, "%s: key %s out of order: %v", what, k, seqs)
		}
	}
}

// natsAddr is the NATS server's address, or skips.
func natsAddr(t testing.TB) string {
	addr := env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	u, err := url.Parse(addr)
	require.NoError(t, err)
	reachable(t, "FXCQRS_NATS_URL", u.Host)
	return addr
}

// jsPubSub is a natsjs PubSub of the "billing" group, closed at the
// test's end.
func jsPubSub(t testing.TB, addr string) *natsjs.PubSub {
	ps, err := natsjs.New(natsjs.Config{URL: addr, Group: "billing", AckWait: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ps.Close() })
	return ps
}

// A keyed route's rows go in their key's lane, by the documented hash; a
// row without a key in lane 0; the key travels in the metadata; and a
// scheduled keyed row keeps its lane until it is due.
func TestKeyedRowsGoInTheirLanes(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		keyed, plain := fmt.Sprintf("keyed_%d", rand.Uint32()), fmt.Sprintf("plain_%d", rand.Uint32())
		var m *fxcqrs.Mediator
		app := fxtest.New(t, fx.NopLogger,
			fxcqrs.Module, fxbus.Module, fxoutbox.Module,
			fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{Lanes: 4, TopicLanes: map[string]int{plain: 8}}}),
			fx.Supply(fx.Annotate(refusing{}, fx.As(new(message.Publisher)))), // the rows stay to be read
			fxbus.Route[Moved](keyed, fxbus.KeyBy(moveKey)),
			fxbus.Route[OrderPlaced](plain),
			fxcqrs.AsCommandHandler(moveAll),
			fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
				return func(ctx context.Context, c PlaceOrder) error {
					fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
					_, err := fxoutbox.ScheduleAfter(ctx, time.Hour, Moved{Key: "later", Seq: c.ID})
					return err
				}
			}),
			fx.Populate(&m),
		)
		app.RequireStart()
		defer app.RequireStop()
		keys := keyNames(12)
		require.NoError(t, fxcqrs.Exec(context.Background(), m, MoveAll{Keys: keys}))
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))

		rows, err := d.DB.Query(d.Dialect.Rebind("SELECT topic, lane, metadata FROM fxcqrs_outbox ORDER BY id"))
		require.NoError(t, err)
		defer rows.Close()
		lanes := map[int]bool{}
		n := 0
		for rows.Next() {
			var (
				topic, meta string
				lane        int
				md          map[string]string
			)
			require.NoError(t, rows.Scan(&topic, &lane, &meta))
			require.NoError(t, json.Unmarshal([]byte(meta), &md))
			if topic == plain {
				assert.Zero(t, lane, "no key: lane 0, whatever the topic's lanes")
				assert.NotContains(t, md, fxbus.MetadataKey)
				continue
			}
			n++
			key := md[fxbus.MetadataKey]
			assert.Equal(t, keys[n-1], key, "the key travels in the metadata")
			assert.Equal(t, fxoutbox.LaneOf(key, 4), lane, "key %s", key)
			lanes[lane] = true
		}
		require.NoError(t, rows.Err())
		assert.Equal(t, len(keys), n)
		assert.Len(t, lanes, 4, "twelve keys spread over the four lanes")
		var lane int
		require.NoError(t, d.DB.QueryRow("SELECT lane FROM fxcqrs_outbox_scheduled").Scan(&lane))
		assert.Equal(t, fxoutbox.LaneOf("later", 4), lane, "a scheduled row waits with its lane")
	})
}

// refusing is a publisher that refuses everything: the relay's rows stay.
type refusing struct{}

func (refusing) Publish(string, ...*message.Message) error { return errors.New("refused") }
func (refusing) Close() error                              { return nil }

// A message that fails for good holds back only its key: the key's later
// messages are parked behind it (acknowledged, recorded in order, not
// handled), the other keys flow, a restart keeps the key parked, and a
// release lets its messages go, in their order. On NATS JetStream, on
// each database.
func TestParkedKeyHoldsBackOnlyItsKey(t *testing.T) {
	t.Parallel()
	addr := natsAddr(t)
	forEachDatabase(t, func(t *testing.T, d database) {
		tp := fmt.Sprintf("moves_%d", rand.Uint32())
		provisionNATS(t, addr, tp)
		dropStreamAtCleanup(t, addr, tp+"_poison") // the bus's dead letter topic
		keys := []string{"bad", "good-1", "good-2", "good-3"}
		var (
			fixed atomic.Bool
			got   perKey
		)
		start := func() (*fxtest.App, *fxcqrs.Mediator, *fxbus.Bus, *fxoutbox.Outbox) {
			var (
				m   *fxcqrs.Mediator
				bus *fxbus.Bus
				o   *fxoutbox.Outbox
			)
			ps := jsPubSub(t, addr)
			app := fxtest.New(t, fx.NopLogger,
				fxcqrs.Module, fxbus.Module, fxoutbox.Module,
				fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond, Lanes: 4}}),
				fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 4}}),
				fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
				fxbus.Route[Moved](tp, fxbus.KeyBy(moveKey)),
				fxbus.Subscribe[Moved](tp, fxbus.InOrder(), fxbus.Retry(fxbus.RetryPolicy{MaxRetries: -1})),
				fxcqrs.AsCommandHandler(moveAll),
				fxcqrs.AsEventHandler(func() eventFunc[Moved] {
					return func(ctx context.Context, e Moved) error {
						if fxbus.MessageID(ctx) == "" {
							return nil // the emitter's own, in-process: not the subscription's
						}
						if e.Key == "bad" && !fixed.Load() {
							return errors.New("the ledger refuses it")
						}
						got.add(e)
						return nil
					}
				}),
				fx.Populate(&m, &bus, &o),
			)
			app.RequireStart()
			return app, m, bus, o
		}
		app, m, bus, o := start()
		const first = 10
		for s := range first {
			require.NoError(t, fxcqrs.Exec(context.Background(), m, MoveAll{Seq: s, Keys: keys}))
		}
		// Every good key, not only the last: the lanes relay apart, so
		// good-3's last message may be handled before good-1's.
		allHandled := func(n int) bool {
			for _, k := range keys[1:] {
				if len(got.of(k)) < n {
					return false
				}
			}
			return true
		}
		waitFor(t, func() bool { return bus.Stats().Parked >= first-1 && allHandled(first) })
		firsts, _ := got.firsts()
		inOrder(t, "while bad is parked", firsts, keys[1:], first)
		assert.Empty(t, got.of("bad"), "nothing of the parked key was handled")
		letters, err := o.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: tp})
		require.NoError(t, err)
		require.Len(t, letters, first)
		assert.Contains(t, letters[0].Error, "the ledger refuses it")
		for i, l := range letters {
			assert.Equal(t, "bad", l.Key)
			var e Moved
			require.NoError(t, json.Unmarshal(l.Payload, &e))
			assert.Equal(t, i, e.Seq, "parked in their order")
			if i > 0 {
				assert.Contains(t, l.Error, fxoutbox.ParkedBehind)
			}
		}

		// A restart: the key stays parked, its new message parks too.
		app.RequireStop()
		app, m, bus, o = start()
		defer app.RequireStop()
		require.NoError(t, fxcqrs.Exec(context.Background(), m, MoveAll{Seq: first, Keys: keys}))
		waitFor(t, func() bool { return bus.Stats().Parked >= 1 && allHandled(first+1) })
		assert.Empty(t, got.of("bad"))

		fixed.Store(true)
		n, err := o.Admin().Release(context.Background(), tp, "bad", "ops", "the ledger takes it now")
		require.NoError(t, err)
		assert.Equal(t, first+1, n)
		waitFor(t, func() bool { return len(got.of("bad")) >= first+1 })
		firsts, _ = got.firsts()
		inOrder(t, "after the release", firsts, keys, first+1)
		waitFor(t, func() bool {
			left, err := o.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: tp})
			require.NoError(t, err)
			return len(left) == 0
		})
		repairs, err := o.Admin().Repairs(context.Background(), 10)
		require.NoError(t, err)
		require.NotEmpty(t, repairs)
		assert.Contains(t, repairs[0].Why, "release key bad")
	})
}

// A released message that fails again parks its key again, in its place:
// the messages released behind it wait again, and a second release lets
// them all go in order.
func TestReleasedMessageThatFailsAgainParksAgain(t *testing.T) {
	t.Parallel()
	addr := natsAddr(t)
	d := openDatabase(t, fxoutbox.PostgreSQL)
	tp := fmt.Sprintf("moves_%d", rand.Uint32())
	provisionNATS(t, addr, tp)
	dropStreamAtCleanup(t, addr, tp+"_poison") // the bus's dead letter topic
	var (
		fails atomic.Int64 // failures of bad's first message still to come
		got   perKey
		m     *fxcqrs.Mediator
		bus   *fxbus.Bus
		o     *fxoutbox.Outbox
	)
	fails.Store(2)
	ps := jsPubSub(t, addr)
	app := fxtest.New(t, fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond}}),
		fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fxbus.Route[Moved](tp, fxbus.KeyBy(moveKey)),
		fxbus.Subscribe[Moved](tp, fxbus.InOrder(), fxbus.Retry(fxbus.RetryPolicy{MaxRetries: -1})),
		fxcqrs.AsCommandHandler(moveAll),
		fxcqrs.AsEventHandler(func() eventFunc[Moved] {
			return func(ctx context.Context, e Moved) error {
				if fxbus.MessageID(ctx) == "" {
					return nil // the emitter's own, in-process
				}
				if e.Seq == 0 && fails.Add(-1) >= 0 {
					return errors.New("not yet")
				}
				got.add(e)
				return nil
			}
		}),
		fx.Populate(&m, &bus, &o),
	)
	app.RequireStart()
	defer app.RequireStop()
	for s := range 4 {
		require.NoError(t, fxcqrs.Exec(context.Background(), m, MoveAll{Seq: s, Keys: []string{"bad"}}))
	}
	waitFor(t, func() bool { return bus.Stats().Parked >= 3 })
	n, err := o.Admin().Release(context.Background(), tp, "bad", "ops", "try again")
	require.NoError(t, err)
	require.Equal(t, 4, n)
	// The first fails again: the three behind it come back and park.
	waitFor(t, func() bool { return bus.Stats().Parked >= 6 && bus.Stats().DeadLettered >= 2 })
	assert.Empty(t, got.of("bad"), "none overtook the first")
	letters, err := o.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: tp})
	require.NoError(t, err)
	require.Len(t, letters, 4, "parked again in their places, not recorded twice")
	for _, l := range letters {
		assert.True(t, l.Released.IsZero(), "parked, no longer released")
	}
	n, err = o.Admin().Release(context.Background(), tp, "bad", "ops", "once more")
	require.NoError(t, err)
	require.Equal(t, 4, n)
	waitFor(t, func() bool { return len(got.of("bad")) == 4 })
	assert.Equal(t, []int{0, 1, 2, 3}, got.of("bad"))
}

// Two replicas share one topic's lanes, each its part, while one of them
// is killed with SIGKILL and restarted, round after round: every key's
// messages are in order in the stream (the relay's side) and at the
// consumer that keeps the keys' order (the consumer's side), and the keys
// spread over every lane. PostgreSQL and NATS JetStream.
func TestLanesSharedByReplicas(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the crash test kills processes; not with -short")
	}
	addr := natsAddr(t)
	d := openDatabase(t, fxoutbox.PostgreSQL)
	tp := fmt.Sprintf("lanes_%d", rand.Uint32())
	provisionNATS(t, addr, tp)
	const lanes = 8
	keys := keyNames(48)
	relay := fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond, Lease: time.Second, Lanes: lanes}

	// The consumer, in order per key.
	var got perKey
	perLane := make([]atomic.Int64, lanes)
	consumer := jsPubSub(t, addr)
	var m *fxcqrs.Mediator
	consumerApp := fxtest.New(t, fx.NopLogger, fxcqrs.Module, fxbus.Module,
		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}}),
		fx.Supply(fx.Annotate(consumer, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fxbus.Subscribe[Moved](tp, fxbus.InOrder(), fxbus.InFlight(32)),
		fxcqrs.AsEventHandler(func() eventFunc[Moved] {
			return func(_ context.Context, e Moved) error {
				got.add(e)
				perLane[fxoutbox.LaneOf(e.Key, lanes)].Add(1)
				return nil
			}
		}),
	)
	consumerApp.RequireStart()
	defer consumerApp.RequireStop()

	// This replica writes and relays; the child only relays.
	producer := fxtest.New(t, fx.NopLogger, fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Relay: relay}),
		fx.Supply(fx.Annotate(jsPubSub(t, addr), fx.As(new(message.Publisher)))),
		fxbus.Route[Moved](tp, fxbus.KeyBy(moveKey)),
		fxcqrs.AsCommandHandler(moveAll),
		fx.Populate(&m),
	)
	producer.RequireStart()
	defer producer.RequireStop()

	var (
		seq  atomic.Int64
		stop = make(chan struct{})
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := int(seq.Load())
			if err := fxcqrs.Exec(context.Background(), m, MoveAll{Seq: s, Keys: keys}); err != nil {
				t.Errorf("exec: %v", err)
				return
			}
			seq.Add(1)
		}
	})
	// Who holds which lane, sampled: the replicas share them.
	var shared atomic.Int64 // the most owners seen holding the topic's lanes at once
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var n int64
			if err := d.DB.QueryRow(d.Dialect.Rebind("SELECT COUNT(DISTINCT owner) FROM fxcqrs_outbox_leases WHERE (topic = ? OR topic LIKE ?) AND until_ns >= ?"),
				tp, tp+"#%", time.Now().UnixNano()).Scan(&n); err == nil && n > shared.Load() {
				shared.Store(n)
			}
		}
	})
	crashtest.Harness{
		Child: "TestLanesReplicaChild", Rounds: 3, MinUp: 1500 * time.Millisecond, MaxUp: 2500 * time.Millisecond, NoDrain: true,
		Env: map[string]string{"FXCQRS_CRASH_DSN": d.DSN, "FXCQRS_CRASH_ADDR": addr, "FXCQRS_CRASH_TOPIC": tp},
	}.Run(t)
	close(stop)
	wg.Wait()
	sent := int(seq.Load())
	require.Positive(t, sent)

	// Everything arrives (this replica takes the dead one's lanes over).
	waitFor(t, func() bool {
		firsts, _ := got.firsts()
		for _, k := range keys {
			if len(firsts[k]) < sent {
				return false
			}
		}
		return true
	})
	firsts, repeats := got.firsts()
	inOrder(t, "the consumer", firsts, keys, sent)
	inOrder(t, "the stream", streamOrder(t, addr, tp), keys, sent)
	counts := make([]int64, lanes)
	for i := range perLane {
		counts[i] = perLane[i].Load()
		assert.Positive(t, counts[i], "lane %d carried keys", i)
	}
	assert.GreaterOrEqual(t, shared.Load(), int64(2), "both replicas held lanes at once")
	t.Logf("%d messages of %d keys, in order; per lane %v; %d delivered again; at most %d replicas held lanes at once",
		sent*len(keys), len(keys), counts, repeats, shared.Load())
}

// TestLanesReplicaChild is the relaying replica TestLanesSharedByReplicas
// kills.
func TestLanesReplicaChild(t *testing.T) {
	if crashtest.Mode() == "" {
		t.Skip("started by TestLanesSharedByReplicas only")
	}
	relayUntilKilled(t, fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond, Lease: time.Second, Lanes: 8})
}

// streamOrder reads topic's JetStream stream from its start: each key's
// sequence numbers in stream order, first deliveries only.
func streamOrder(t testing.TB, addr, topic string) map[string][]int {
	t.Helper()
	conn, err := nc.Connect(addr)
	require.NoError(t, err)
	defer conn.Close()
	js, err := conn.JetStream()
	require.NoError(t, err)
	info, err := js.StreamInfo(topic)
	require.NoError(t, err)
	sub, err := js.SubscribeSync(topic, nc.OrderedConsumer(), nc.DeliverAll())
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	out := map[string][]int{}
	seen := map[string]bool{}
	for range info.State.Msgs {
		msg, err := sub.NextMsg(10 * time.Second)
		require.NoError(t, err)
		var e Moved
		require.NoError(t, json.Unmarshal(msg.Data, &e))
		id := fmt.Sprintf("%s/%d", e.Key, e.Seq)
		if seen[id] {
			continue
		}
		seen[id] = true
		out[e.Key] = append(out[e.Key], e.Seq)
	}
	return out
}

// Changing a topic's lanes once it is drained keeps every key's order: a
// topic sent as one lane, drained, then as four.
func TestLanesChangedOnADrainedTopic(t *testing.T) {
	t.Parallel()
	addr := natsAddr(t)
	d := openDatabase(t, fxoutbox.PostgreSQL)
	tp := fmt.Sprintf("relaned_%d", rand.Uint32())
	provisionNATS(t, addr, tp)
	keys := keyNames(16)
	var got perKey
	consumer := fxtest.New(t, fx.NopLogger, fxcqrs.Module, fxbus.Module,
		fx.Supply(fx.Annotate(jsPubSub(t, addr), fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fxbus.Subscribe[Moved](tp, fxbus.InOrder()),
		fxcqrs.AsEventHandler(func() eventFunc[Moved] {
			return func(_ context.Context, e Moved) error { got.add(e); return nil }
		}),
	)
	consumer.RequireStart()
	defer consumer.RequireStop()
	run := func(lanes, from, to int) {
		var (
			m *fxcqrs.Mediator
			o *fxoutbox.Outbox
		)
		app := fxtest.New(t, fx.NopLogger, fxcqrs.Module, fxbus.Module, fxoutbox.Module,
			fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond, Lanes: lanes}}),
			fx.Supply(fx.Annotate(jsPubSub(t, addr), fx.As(new(message.Publisher)))),
			fxbus.Route[Moved](tp, fxbus.KeyBy(moveKey)),
			fxcqrs.AsCommandHandler(moveAll),
			fx.Populate(&m, &o),
		)
		app.RequireStart()
		defer app.RequireStop()
		for s := from; s < to; s++ {
			require.NoError(t, fxcqrs.Exec(context.Background(), m, MoveAll{Seq: s, Keys: keys}))
		}
		waitFor(t, func() bool { // drained: nothing of the topic waits
			b, err := o.Admin().Backlog(context.Background())
			require.NoError(t, err)
			return len(b) == 0
		})
		if lanes > 1 { // before the stop gives the leases back
			var n int
			require.NoError(t, d.DB.QueryRow(d.Dialect.Rebind("SELECT COUNT(*) FROM fxcqrs_outbox_leases WHERE topic LIKE ?"), tp+"#%").Scan(&n))
			assert.Positive(t, n, "the lanes were leased apart")
		}
	}
	run(1, 0, 20)
	run(4, 20, 40)
	waitFor(t, func() bool { // every key: InOrder keeps a key's order, not one key behind another
		for _, k := range keys {
			if len(got.of(k)) < 40 {
				return false
			}
		}
		return true
	})
	firsts, _ := got.firsts()
	inOrder(t, "across the change", firsts, keys, 40)
}

// counting is a publisher that takes everything at once and counts it.
type counting struct{ n atomic.Int64 }

func (c *counting) Publish(_ string, msgs ...*message.Message) error {
	c.n.Add(int64(len(msgs)))
	return nil
}
func (c *counting) Close() error { return nil }

// Relays share a topic's lanes fairly: one alone takes all eight; a
// second that starts gets four of them from it, between batches, and each
// keeps its four; once the second stops, the first takes all eight again.
func TestReplicasShareLanesFairly(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.PostgreSQL)
	tp := fmt.Sprintf("fair_%d", rand.Uint32())
	const lanes = 8
	relay := func(pub *counting) *fxoutbox.Outbox {
		bus, err := fxbus.New(fxbus.Config{Publisher: pub}, nil, nil)
		require.NoError(t, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
			PollInterval: 20 * time.Millisecond, Lease: time.Second, Lanes: lanes,
		}}, nil)
		require.NoError(t, err)
		require.NoError(t, o.Start(context.Background()))
		return o
	}
	// Rows keep coming in every lane.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		insert := d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata) VALUES (?, ?, ?, ?, ?)")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			for l := range lanes {
				_, _ = d.DB.Exec(insert, tp, l, fmt.Sprintf("m-%d-%d", i, l), []byte(`{}`), `{}`)
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	// held is how many of the topic's lanes each relay holds, by owner.
	held := func() []int64 {
		return ids(t, d.DB, d.Dialect.Rebind("SELECT COUNT(*) FROM fxcqrs_outbox_leases WHERE (topic = ? OR topic LIKE ?) AND until_ns >= ? GROUP BY owner ORDER BY COUNT(*)"),
			tp, tp+"#%", time.Now().UnixNano())
	}
	// steady waits for the lanes to be held as want, in five samples in a
	// row, 50ms apart.
	steady := func(want ...int64) {
		t.Helper()
		inARow := 0
		waitFor(t, func() bool {
			if slices.Equal(held(), want) {
				inARow++
			} else {
				inARow = 0
			}
			time.Sleep(50 * time.Millisecond)
			return inARow >= 5
		})
	}
	pubA, pubB := &counting{}, &counting{}
	a := relay(pubA)
	defer func() { require.NoError(t, a.Stop(context.Background())) }()
	steady(8)
	b := relay(pubB)
	steady(4, 4)
	sentB := pubB.n.Load()
	assert.Positive(t, sentB, "the second relay sends its lanes")
	require.NoError(t, b.Stop(context.Background()))
	steady(8)
	before := pubA.n.Load()
	waitFor(t, func() bool { return pubA.n.Load() > before })
	t.Logf("the second relay sent %d rows while it held four lanes", sentB)
}
