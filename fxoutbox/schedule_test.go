package fxoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Commands of the schedule tests.
type (
	// Remind schedules: a CancelUnpaid after Delay, or an OrderPlaced
	// (routed) at Delay, and cancels Cancel when set.
	Remind struct {
		ID     int
		Delay  time.Duration
		Routed bool
		Cancel string
	}
	// CancelUnpaid is the scheduled command.
	CancelUnpaid struct{ ID int }
)

// passesWithout waits until o's relay has run n more passes, so that a
// test knows the relay looked and did not deliver.
func passesWithout(t *testing.T, o *fxoutbox.Outbox, n uint64) {
	t.Helper()
	from := fxoutbox.Passes(o)
	require.Eventually(t, func() bool { return fxoutbox.Passes(o) >= from+n }, time.Minute, time.Millisecond)
}

// A scheduled command runs when its time comes by the outbox's clock,
// never before, once, as an ordinary mediator call in a unit of work of
// its own; a cancelled one never runs; a routed event is published at its
// time; a schedule outside a unit of work is refused.
func TestSchedule(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		_, err := d.DB.Exec("CREATE TABLE cancelled (id INTEGER PRIMARY KEY)")
		require.NoError(t, err)
		clock := newFakeClock()
		var (
			mu  sync.Mutex
			ids = map[int]string{}
			ran = map[int]int{}
		)
		r := newRig(t, d, fxoutbox.Config{Now: clock.Now, Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid]()}},
			fxcqrs.WithCommandHandlers(
				commandFunc[Remind](func(ctx context.Context, c Remind) error {
					if c.Cancel != "" {
						ok, err := fxoutbox.Cancel(ctx, c.Cancel)
						if err == nil && !ok {
							err = errors.New("not waiting")
						}
						return err
					}
					var msg any = CancelUnpaid{ID: c.ID}
					if c.Routed {
						msg = OrderPlaced{ID: c.ID}
					}
					id, err := fxoutbox.ScheduleAfter(ctx, c.Delay, msg)
					mu.Lock()
					ids[c.ID] = id
					mu.Unlock()
					return err
				}),
				commandFunc[CancelUnpaid](func(ctx context.Context, c CancelUnpaid) error {
					if fxoutbox.Tx(ctx) == nil {
						return errors.New("no unit of work")
					}
					mu.Lock()
					ran[c.ID]++
					mu.Unlock()
					_, err := fxoutbox.Tx(ctx).ExecContext(ctx, d.Dialect.Rebind("INSERT INTO cancelled (id) VALUES (?)"), c.ID)
					return err
				}),
			))
		orders := received(t, r.gc, "orders")

		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{ID: 1, Delay: 30 * time.Minute}))
		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{ID: 2, Delay: 10 * time.Minute}))
		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{ID: 3, Delay: 20 * time.Minute, Routed: true}))
		mu.Lock()
		cancel := ids[2]
		mu.Unlock()
		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{Cancel: cancel}))
		assert.Error(t, fxcqrs.Exec(context.Background(), r.m, Remind{Cancel: cancel}), "cancelled once: no longer waiting")

		clock.Advance(29*time.Minute + 59*time.Second)
		passesWithout(t, r.outbox, 3)
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM cancelled"), "not before its time")
		msg := next(t, orders)
		assert.JSONEq(t, `{"ID":3}`, string(msg.Payload), "the routed event went out at its time")
		mu.Lock()
		assert.Equal(t, ids[3], msg.UUID, "with the id Schedule returned")
		mu.Unlock()

		clock.Advance(time.Second)
		require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM cancelled") == 1 }, time.Minute, time.Millisecond)
		clock.Advance(time.Hour)
		passesWithout(t, r.outbox, 3)
		mu.Lock()
		assert.Equal(t, map[int]int{1: 1}, ran, "the due one ran once; the cancelled one never")
		mu.Unlock()
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"))

		_, err = fxoutbox.Schedule(context.Background(), clock.Now(), CancelUnpaid{})
		assert.ErrorIs(t, err, fxoutbox.ErrNoUnitOfWork)
	})
}

// A scheduled command delivered twice (the relay killed between running it
// and deleting its row) runs once: its message id is its idempotency key.
func TestScheduledCommandRunsOnce(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		var mu sync.Mutex
		ran := 0
		clock := newFakeClock()
		r := newRig(t, d, fxoutbox.Config{Now: clock.Now, Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid]()}},
			fxcqrs.WithCommandHandlers(
				commandFunc[Remind](func(ctx context.Context, c Remind) error {
					_, err := fxoutbox.ScheduleAfter(ctx, c.Delay, CancelUnpaid{ID: c.ID})
					return err
				}),
				commandFunc[CancelUnpaid](func(context.Context, CancelUnpaid) error {
					mu.Lock()
					ran++
					mu.Unlock()
					return nil
				})))
		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{ID: 1, Delay: time.Minute}))
		// The same schedule twice, as a crash between the command's commit
		// and the row's delete leaves it.
		_, err := d.DB.Exec("INSERT INTO fxcqrs_outbox_scheduled (due_ns, topic, message_id, payload, metadata) " +
			"SELECT due_ns, topic, message_id, payload, metadata FROM fxcqrs_outbox_scheduled")
		require.NoError(t, err)
		clock.Advance(time.Minute)
		require.Eventually(t, func() bool {
			return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled")+count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0
		}, time.Minute, time.Millisecond)
		mu.Lock()
		assert.Equal(t, 1, ran)
		mu.Unlock()
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"))
	})
}

// Schedule refuses what nothing would deliver.
func TestScheduleRefusesTheUndeliverable(t *testing.T) {
	d := openDatabase(t, fxoutbox.SQLite)
	var err error
	r := newRig(t, d, fxoutbox.Config{}, fxcqrs.WithCommandHandlers(commandFunc[Remind](func(ctx context.Context, _ Remind) error {
		_, err = fxoutbox.ScheduleAfter(ctx, time.Minute, CancelUnpaid{})
		return nil
	})))
	require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{}))
	require.ErrorContains(t, err, "nothing delivers")
}

// With 100,000 schedules spread over an hour, finding the due ones and
// the earliest is an index range scan, not a scan of every row: the
// query plans on PostgreSQL, after ANALYZE, use the due index.
func TestScheduleQueriesUseTheIndex(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.PostgreSQL)
	clock := newFakeClock()
	start := clock.Now().UnixNano()
	_, err := d.DB.Exec(`INSERT INTO fxcqrs_outbox_scheduled (due_ns, topic, message_id, payload, metadata)
		SELECT $1::bigint + (i::bigint * 36000000), 'orders', 'm-' || i, '\x7b7d'::bytea, '{}' FROM generate_series(1, 100000) AS i`, start)
	require.NoError(t, err)
	_, err = d.DB.Exec("ANALYZE fxcqrs_outbox_scheduled")
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, mustBus(t), fxoutbox.Config{Dialect: d.Dialect, Now: clock.Now}, nil)
	require.NoError(t, err)
	due, nextDue := fxoutbox.DueQueries(o)
	for _, q := range []struct {
		sql  string
		args []any
	}{{due, []any{start + int64(time.Minute), 100}}, {nextDue, nil}} {
		rows, err := d.DB.Query("EXPLAIN "+q.sql, q.args...)
		require.NoError(t, err)
		var plan []string
		for rows.Next() {
			var line string
			require.NoError(t, rows.Scan(&line))
			plan = append(plan, line)
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
		joined := strings.Join(plan, "\n")
		assert.Contains(t, joined, "fxcqrs_outbox_scheduled_due", "%s:\n%s", q.sql, joined)
		assert.NotContains(t, joined, "Seq Scan", "%s:\n%s", q.sql, joined)
	}
}

func mustBus(t *testing.T) *fxbus.Bus {
	t.Helper()
	b, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(t, err)
	return b
}

// Two replicas share one PostgreSQL's schedules: each due command runs on
// one of them, once, and is delivered once as a matter of course (no
// delivery the inbox had to skip).
func TestTwoReplicasShareSchedules(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.PostgreSQL)
	clock := newFakeClock()
	const n = 200
	var (
		mu         sync.Mutex
		ran        = map[int]int{}
		deliveries int
	)
	replica := func() *fxcqrs.Mediator {
		b := mustBus(t)
		o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{
			Dialect: d.Dialect, Now: clock.Now,
			Relay:        fxoutbox.RelayConfig{PollInterval: 5 * time.Millisecond, BatchSize: 16},
			Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid]()},
		}, nil)
		require.NoError(t, err)
		m, err := fxcqrs.New(fxcqrs.Config{},
			fxcqrs.WithMiddleware(fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, c fxcqrs.Call, next fxcqrs.Next) (any, error) {
				if _, ok := c.Message.(CancelUnpaid); ok {
					mu.Lock()
					deliveries++ // before the inbox decides
					mu.Unlock()
				}
				return next(ctx)
			}), fxcqrs.KindCommand), o.UnitOfWork()),
			fxcqrs.WithCommandHandlers(
				commandFunc[Remind](func(ctx context.Context, c Remind) error {
					_, err := fxoutbox.ScheduleAfter(ctx, c.Delay, CancelUnpaid{ID: c.ID})
					return err
				}),
				commandFunc[CancelUnpaid](func(_ context.Context, c CancelUnpaid) error {
					mu.Lock()
					ran[c.ID]++
					mu.Unlock()
					return nil
				})))
		require.NoError(t, err)
		o.DeliverTo(m)
		require.NoError(t, o.Start(context.Background()))
		t.Cleanup(func() {
			require.NoError(t, m.Stop(context.Background()))
			require.NoError(t, o.Stop(context.Background()))
		})
		return m
	}
	a, b := replica(), replica()
	for i := range n {
		m := a
		if i%2 == 1 {
			m = b
		}
		require.NoError(t, fxcqrs.Exec(context.Background(), m, Remind{ID: i, Delay: time.Duration(i) * time.Second}))
	}
	clock.Advance(n * time.Second)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ran) == n
	}, time.Minute, time.Millisecond)
	require.Eventually(t, func() bool {
		return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox")+count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled") == 0
	}, time.Minute, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		assert.Equal(t, 1, ran[i], "command %d ran once", i)
	}
	assert.Equal(t, n, deliveries, "each schedule delivered once")
}

// The relay waits on Config.After: with the fake clock's timers and an
// hour's poll, a schedule 30 minutes ahead runs when the test moves the
// clock 30 minutes on, not when the wall clock does.
func TestRelayWaitsOnTheClock(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	clock := newFakeClock()
	ran := make(chan int, 1)
	r := newRig(t, d, fxoutbox.Config{
		Now: clock.Now, After: clock.After, Relay: fxoutbox.RelayConfig{PollInterval: time.Hour},
		Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid]()},
	},
		fxcqrs.WithCommandHandlers(
			commandFunc[Remind](func(ctx context.Context, c Remind) error {
				_, err := fxoutbox.ScheduleAfter(ctx, c.Delay, CancelUnpaid{ID: c.ID})
				return err
			}),
			commandFunc[CancelUnpaid](func(_ context.Context, c CancelUnpaid) error {
				ran <- c.ID
				return nil
			})))
	before := fxoutbox.Passes(r.outbox)
	require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{ID: 5, Delay: 30 * time.Minute}))
	// The commit woke the relay; its pass finds nothing due and it waits
	// for the schedule's time, on the fake clock.
	require.Eventually(t, func() bool { return fxoutbox.Passes(r.outbox) > before }, time.Minute, time.Millisecond)
	select {
	case <-ran:
		t.Fatal("ran before its time")
	default:
	}
	clock.Advance(30 * time.Minute)
	select {
	case id := <-ran:
		assert.Equal(t, 5, id)
	case <-time.After(time.Minute):
		t.Fatal("the relay did not pass when the clock reached the schedule")
	}
}

// Again is a scheduled command that schedules itself.
type Again struct{ N int }

// A chain of schedules, each run scheduling the next, stops at
// fxcqrs.MaxDepth as a chain of durable events does: the schedule past it
// is refused, and its run dead-letters with ErrMaxDepth.
func TestScheduleChainStopsAtMaxDepth(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	var runs atomic.Int32
	r := newRig(t, d, fxoutbox.Config{
		Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[Again]()},
		Delivery:     fxoutbox.DeliveryConfig{MaxAttempts: 1},
	},
		fxcqrs.WithCommandHandlers(
			commandFunc[Remind](func(ctx context.Context, _ Remind) error {
				_, err := fxoutbox.ScheduleAfter(ctx, 0, Again{N: 1})
				return err
			}),
			commandFunc[Again](func(ctx context.Context, a Again) error {
				runs.Add(1)
				_, err := fxoutbox.ScheduleAfter(ctx, 0, Again{N: a.N + 1})
				return err
			})))
	require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{}))
	require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead") == 1 }, time.Minute, time.Millisecond)
	var reason string
	require.NoError(t, d.DB.QueryRow("SELECT error FROM fxcqrs_outbox_dead").Scan(&reason))
	assert.Contains(t, reason, fxcqrs.ErrMaxDepth.Error())
	assert.Equal(t, int32(fxcqrs.MaxDepth), runs.Load(), "each link up to MaxDepth ran once; the last one's schedule was refused")
	assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"))
}

// duePublisher takes what the relay sends and counts the messages that
// went out before their time (their id says when they were due).
type duePublisher struct {
	clock       *fakeClock
	start       int64
	sent, early atomic.Int64
}

func (p *duePublisher) Publish(_ string, msgs ...*message.Message) error {
	now := p.clock.Now().UnixNano()
	for _, m := range msgs {
		var i int64
		if _, err := fmt.Sscanf(m.UUID, "m-%d", &i); err == nil && p.start+i*int64(36*time.Millisecond) > now {
			p.early.Add(1)
		}
	}
	p.sent.Add(int64(len(msgs)))
	return nil
}
func (p *duePublisher) Close() error { return nil }

// 100,000 schedules over an hour of fake time, the clock moved a minute
// at a time: each minute's rows go out once due and never before, and the
// relay's passes per minute and the process's heap stay flat from the
// first minutes to the last (no scan of every row per wake, nothing kept
// per schedule in memory). Not parallel: it reads the heap.
func TestHourOfSchedules(t *testing.T) {
	if testing.Short() {
		t.Skip("an hour of fake time over 100,000 rows; not with -short")
	}
	d := openDatabase(t, fxoutbox.PostgreSQL)
	clock := newFakeClock()
	start := clock.Now().UnixNano()
	const rows = 100000 // one every 36ms: an hour
	_, err := d.DB.Exec(`INSERT INTO fxcqrs_outbox_scheduled (due_ns, topic, message_id, payload, metadata)
		SELECT $1::bigint + (i::bigint * 36000000), 'orders', 'm-' || i, '\x7b7d'::bytea, '{}' FROM generate_series(1, 100000) AS i`, start)
	require.NoError(t, err)
	_, err = d.DB.Exec("ANALYZE fxcqrs_outbox_scheduled")
	require.NoError(t, err)
	pub := &duePublisher{clock: clock, start: start}
	bus, err := fxbus.New(fxbus.Config{Publisher: pub}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Now: clock.Now, After: clock.After}, nil)
	require.NoError(t, err)
	require.NoError(t, o.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })

	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var passes []uint64
	var heaps []uint64
	for range 60 {
		before := fxoutbox.Passes(o)
		clock.Advance(time.Minute)
		waitFor(t, func() bool {
			due := min((clock.Now().UnixNano()-start)/int64(36*time.Millisecond), rows)
			if pub.sent.Load() >= due {
				return true
			}
			clock.Advance(36 * time.Millisecond) // a relay that set its timer after the move waits on it: one row on
			return false
		})
		passes = append(passes, fxoutbox.Passes(o)-before)
		heaps = append(heaps, heap())
	}
	assert.EqualValues(t, rows, pub.sent.Load(), "every schedule sent once due")
	assert.Zero(t, pub.early.Load(), "none before its time")
	mean := func(xs []uint64) float64 {
		var s uint64
		for _, x := range xs {
			s += x
		}
		return float64(s) / float64(len(xs))
	}
	early, late := mean(passes[1:11]), mean(passes[50:60])
	t.Logf("relay passes per fake minute: %.1f in minutes 2-11, %.1f in minutes 51-60; heap %.1f MiB after minute 10, %.1f MiB after minute 60",
		early, late, float64(heaps[9])/(1<<20), float64(heaps[59])/(1<<20))
	assert.LessOrEqual(t, late, 2*early+5, "the relay's work per minute stays flat")
	assert.Less(t, float64(heaps[59]), float64(heaps[9])+8<<20, "the heap stays flat")
}
