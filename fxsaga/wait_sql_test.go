package fxsaga_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sqlWait is one replica of a service whose sagas wait, on a database of
// the test's: the outbox's unit of work (with the inbox), the deadline as
// a scheduled command, the resumer of Paid. The relay runs, on the fake
// clock, when relay is set: it delivers the deadlines; the test delivers
// the events.
type sqlWait struct {
	r     *fxsaga.Runner
	m     *fxcqrs.Mediator
	store *fxsaga.SQL
	bus   *fxbus.Bus
}

func newSQLWait(t testing.TB, d database, c *clock, relay bool) sqlWait {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: gc}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{
		Dialect: d.Dialect, Inbox: true, Now: c.Now, After: c.After,
		Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[fxsaga.Deadline]()},
	}, nil)
	require.NoError(t, err)
	resume, deadlines := fxsaga.NewResumer[Paid](), fxsaga.NewDeadlineHandler()
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}, deadlines),
		fxcqrs.WithEventHandlers(resume),
		fxcqrs.WithMiddleware(o.UnitOfWork()))
	require.NoError(t, err)
	o.DeliverTo(m)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	r := fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{CompensationBackoff: time.Millisecond, Now: c.Now}, nil)
	resume.Bind(r)
	deadlines.Bind(r)
	if relay {
		require.NoError(t, o.Start(context.Background()))
		t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })
	}
	return sqlWait{r: r, m: m, store: store, bus: bus}
}

// paidSaga reserves (a write of its idempotency key), waits for Paid,
// ships (another write).
func paidSaga(d database) *fxsaga.Saga[Order] {
	return fxsaga.Define[Order]("paid order",
		writing{d: d, name: "reserve"},
		awaitPayment(nil),
		writing{d: d, name: "ship"},
	)
}

func effectsTable(t testing.TB, d database) {
	t.Helper()
	_, err := d.DB.Exec("CREATE TABLE effects (saga_key VARCHAR(128) NOT NULL)")
	require.NoError(t, err)
}

// effects returns what the steps of saga id wrote, sorted.
func effects(t testing.TB, d database, id string) []string {
	t.Helper()
	rows, err := d.DB.Query(d.Dialect.Rebind("SELECT saga_key FROM effects WHERE saga_key LIKE ?"), id+":%")
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		out = append(out, strings.TrimPrefix(k, id+":"))
	}
	require.NoError(t, rows.Err())
	slices.Sort(out)
	return out
}

// inbound is ctx as a subscription gives it to handlers of msg.
func inbound(ctx context.Context, b *fxbus.Bus, id string) context.Context {
	return b.WithMessage(ctx, message.NewMessage(id, nil))
}

// The wait's deadline is a scheduled message written with the saga's
// waiting state; the payment, arriving as an inbound message, resumes the
// saga in one transaction with its inbox record and cancels the deadline.
// A Then that fails rolls all of it back, inbox record included, so the
// message is retried; its redelivery after success is the inbox's.
func TestAwaitOnTheOutbox(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		effectsTable(t, d)
		ctx := context.Background()
		c := newClock()
		rig := newSQLWait(t, d, c, false)
		failThen := atomic.Bool{}
		failThen.Store(true)
		s := fxsaga.Define[Order]("paid order",
			writing{d: d, name: "reserve"},
			fxsaga.Await(fxsaga.Wait[Order, Paid]{
				Key:    func(o *Order) string { return strconv.Itoa(o.ID) },
				Match:  func(p Paid) string { return p.OrderID },
				Within: 30 * time.Minute,
				Then: func(ctx context.Context, o *Order, p Paid) error {
					if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, d.Dialect.Rebind("INSERT INTO effects (saga_key) VALUES (?)"), fxsaga.IdempotencyKey(ctx)); err != nil {
						return err
					}
					if failThen.Load() {
						return errors.New("the ledger is down")
					}
					o.Shipment = p.Payment
					return nil
				},
			}),
			writing{d: d, name: "ship"},
		)
		_, err := fxsaga.Run(ctx, rig.r, s, Order{ID: 41})
		var pending *fxsaga.Pending
		require.ErrorAs(t, err, &pending)
		st, err := rig.store.Load(ctx, pending.SagaID)
		require.NoError(t, err)
		require.NotEmpty(t, st.Timer)
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"), "the deadline")
		assert.Equal(t, 1, count(t, d.DB, d.Dialect.Rebind("SELECT COUNT(*) FROM fxcqrs_outbox_scheduled WHERE message_id = '"+st.Timer+"'")))

		msg := uuid.NewString()
		err = fxcqrs.Publish(inbound(ctx, rig.bus, msg), rig.m, Paid{OrderID: "41", Payment: "p-41"})
		require.ErrorContains(t, err, "the ledger is down")
		assert.Equal(t, 0, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"), "rolled back with the resume")
		assert.Equal(t, []string{"0:act"}, effects(t, d, st.ID), "Then's write rolled back")
		now, _ := rig.store.Load(ctx, st.ID)
		assert.Equal(t, fxsaga.Waiting, now.Status)

		failThen.Store(false)
		require.NoError(t, fxcqrs.Publish(inbound(ctx, rig.bus, msg), rig.m, Paid{OrderID: "41", Payment: "p-41"}))
		now, _ = rig.store.Load(ctx, st.ID)
		assert.Equal(t, fxsaga.Completed, now.Status)
		assert.Equal(t, []string{"0:act", "1:resume", "2:act"}, effects(t, d, st.ID))
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"))
		assert.Equal(t, 0, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"), "the deadline cancelled")

		require.NoError(t, fxcqrs.Publish(inbound(ctx, rig.bus, msg), rig.m, Paid{OrderID: "41", Payment: "p-41"}))
		assert.Equal(t, int64(0), rig.r.Unmatched(), "a redelivery is the inbox's: the resumer never sees it")
	})
}

// The event and the deadline of one saga, the deadline delivered by the
// relay when the clock reaches it while the events arrive, have one
// winner: the saga either completes (the event's effects, then the next
// step's) or compensates (the deadline's), never both, and no step acts
// twice.
func TestEventAndDeadlineRace(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		effectsTable(t, d)
		ctx := context.Background()
		c := newClock()
		rig := newSQLWait(t, d, c, true)
		s := paidSaga(d)
		const sagas = 40
		ids := make([]string, sagas)
		for i := range sagas {
			_, err := fxsaga.Run(ctx, rig.r, s, Order{ID: i})
			var pending *fxsaga.Pending
			require.ErrorAs(t, err, &pending)
			ids[i] = pending.SagaID
		}
		var wg sync.WaitGroup
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				assert.NoError(t, fxcqrs.Publish(inbound(ctx, rig.bus, uuid.NewString()), rig.m, Paid{OrderID: strconv.Itoa(i), Payment: "p"}))
			}()
			if i == sagas/4 {
				c.Advance(time.Hour) // the deadlines are due: the relay delivers them
			}
		}
		wg.Wait()
		outcomes := map[fxsaga.Status]int{}
		require.Eventually(t, func() bool {
			clear(outcomes)
			for _, id := range ids {
				st, err := rig.store.Load(ctx, id)
				require.NoError(t, err)
				outcomes[st.Status]++
			}
			return outcomes[fxsaga.Completed]+outcomes[fxsaga.Compensated] == sagas
		}, time.Minute, 5*time.Millisecond, "every saga ends")
		for _, id := range ids {
			st, err := rig.store.Load(ctx, id)
			require.NoError(t, err)
			switch st.Status {
			case fxsaga.Completed:
				assert.Equal(t, []string{"0:act", "2:act"}, effects(t, d, id), id)
			case fxsaga.Compensated:
				assert.Equal(t, []string{"0:act", "0:compensate"}, effects(t, d, id), id)
			}
		}
		t.Logf("outcomes: %v; unmatched events: %d", outcomes, rig.r.Unmatched())
		assert.Equal(t, int64(outcomes[fxsaga.Compensated]), rig.r.Unmatched(), "each event that lost is counted")
		// Each deadline was cancelled or, due, moved into the outbox by the
		// relay (a cancel that lost a lock to the relay leaves its row to
		// the relay; the saga has moved on when it comes).
		require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled") == 0 }, time.Minute, 5*time.Millisecond,
			"no deadline left behind")
	})
}

// Two replicas, many waiting sagas, their events delivered to either
// replica in random order, each twice under different message ids: each
// saga resumes once.
func TestTwoReplicasResume(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		effectsTable(t, d)
		sagas := 200
		if d.Dialect == fxoutbox.PostgreSQL {
			sagas = 1000
		}
		ctx := context.Background()
		c := newClock()
		a, b := newSQLWait(t, d, c, false), newSQLWait(t, d, c, false)
		s := paidSaga(d)
		ids := make([]string, sagas)
		for i := range sagas {
			rig := a
			if i%2 == 1 {
				rig = b
			}
			_, err := fxsaga.Run(ctx, rig.r, s, Order{ID: i})
			var pending *fxsaga.Pending
			require.ErrorAs(t, err, &pending)
			ids[i] = pending.SagaID
		}
		type delivery struct {
			rig   sqlWait
			order int
		}
		var deliveries []delivery
		for i := range sagas {
			deliveries = append(deliveries, delivery{a, i}, delivery{b, i})
		}
		rand.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
		work := make(chan delivery)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for dl := range work {
					ctx := inbound(ctx, dl.rig.bus, uuid.NewString())
					assert.NoError(t, fxcqrs.Publish(ctx, dl.rig.m, Paid{OrderID: strconv.Itoa(dl.order), Payment: "p"}))
				}
			}()
		}
		for _, dl := range deliveries {
			work <- dl
		}
		close(work)
		wg.Wait()
		for _, id := range ids {
			st, err := a.store.Load(ctx, id)
			require.NoError(t, err)
			require.Equal(t, fxsaga.Completed, st.Status, id)
			require.Equal(t, []string{"0:act", "2:act"}, effects(t, d, id), id)
		}
		assert.Equal(t, int64(sagas), a.r.Unmatched()+b.r.Unmatched(), "every second delivery resumed nothing")
		assert.Equal(t, 2*sagas, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"), "each delivery recorded once")
	})
}

// The event's lookup and recovery's overdue scan use the waiting
// indexes, not a scan of the sagas table.
func TestWaitingQueriesUseTheIndex(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.PostgreSQL)
	ctx := context.Background()
	// Enough finished sagas that the planner would rather not scan.
	_, err := d.DB.ExecContext(ctx, `INSERT INTO fxcqrs_sagas (id, name, status, step, context, version)
		SELECT 'done-' || g, 'paid order', 'COMPLETED', 3, '{}', 4 FROM generate_series(1, 20000) g`)
	require.NoError(t, err)
	_, err = d.DB.ExecContext(ctx, `INSERT INTO fxcqrs_sagas (id, name, status, step, context, version, awaiting, correlation, deadline_ns)
		SELECT 'wait-' || g, 'paid order', 'WAITING', 1, '{}', 2, 'fxsaga_test.Paid', g::text, g FROM generate_series(1, 200) g`)
	require.NoError(t, err)
	_, err = d.DB.ExecContext(ctx, "ANALYZE fxcqrs_sagas")
	require.NoError(t, err)
	for name, q := range map[string]string{
		"correlated": "SELECT id FROM fxcqrs_sagas WHERE awaiting = 'fxsaga_test.Paid' AND correlation = '17' AND tenant = '' AND status = 'WAITING'",
		"overdue":    "SELECT id FROM fxcqrs_sagas WHERE name = 'paid order' AND status = 'WAITING' AND deadline_ns < 50 ORDER BY deadline_ns, id LIMIT 100",
	} {
		rows, err := d.DB.QueryContext(ctx, "EXPLAIN "+q)
		require.NoError(t, err)
		var plan []string
		for rows.Next() {
			var line string
			require.NoError(t, rows.Scan(&line))
			plan = append(plan, line)
		}
		require.NoError(t, rows.Close())
		text := strings.Join(plan, "\n")
		t.Logf("%s:\n%s", name, text)
		assert.Contains(t, text, "Index", name)
		assert.NotContains(t, text, "Seq Scan", name)
	}
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	got, err := store.Correlated(ctx, "", "fxsaga_test.Paid", "17")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "wait-17", got[0].ID)
	assert.Equal(t, time.Unix(0, 17), got[0].Deadline)
	waiting, err := store.Waiting(ctx, "paid order", 5)
	require.NoError(t, err)
	assert.Len(t, waiting, 5)
	claimed, err := store.Claim(ctx, "paid order", 100)
	require.NoError(t, err)
	assert.Empty(t, claimed, "a waiting saga is never claimed")
	overdue, err := store.Overdue(ctx, "paid order", time.Unix(0, 50), 10)
	require.NoError(t, err)
	assert.Len(t, overdue, 10, "bounded")
	assert.Equal(t, "wait-1", overdue[0].ID, "earliest first")
	counts, err := store.Counts(ctx)
	require.NoError(t, err)
	assert.Equal(t, []fxsaga.Count{{Name: "paid order", Status: fxsaga.Completed, N: 20000}, {Name: "paid order", Status: fxsaga.Waiting, N: 200}}, counts)
}
