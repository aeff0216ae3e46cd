package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener outlives a closed *sql.DB by a
		// moment; it is named here, and only it.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// publisher records what a relay publishes, and calls onPublish (on the
// relay's goroutine) before it takes each message.
type publisher struct {
	mu        sync.Mutex
	ids       []string
	onPublish func(msgID string)
}

func (p *publisher) Publish(_ string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		if p.onPublish != nil {
			p.onPublish(msg.UUID)
		}
		p.mu.Lock()
		p.ids = append(p.ids, msg.UUID)
		p.mu.Unlock()
	}
	return nil
}

func (p *publisher) Close() error { return nil }

func (p *publisher) published() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids)
}

type bus struct{ pub *publisher }

func (b bus) Publisher() message.Publisher { return b.pub }

func (bus) Send(context.Context, string, []*message.Message) func(error) { return func(error) {} }

type noLocal struct{}

func (noLocal) Ready() bool { return false }

func (noLocal) Deliver(context.Context, string, []byte, string) error { return nil }

// newRelay is a relay of d's outbox on clock, owned by owner, publishing
// to pub.
func newRelay(d outboxtest.Database, clock *outboxtest.Clock, owner string, pub *publisher, cfg relay.Config) *relay.Relay {
	return newRelayOn(d, clock, owner, bus{pub}, cfg)
}

// newRelayOn is newRelay publishing to b's publisher.
func newRelayOn(d outboxtest.Database, clock *outboxtest.Clock, owner string, b relay.Bus, cfg relay.Config) *relay.Relay {
	q := schema.NewQueries(d.Dialect, schema.WithDefaults(schema.Tables{}))
	st := lease.Statements{Renew: q.RenewLease, Take: q.TakeLease, Drop: q.DropLease, DropAll: q.DropLeases}
	return relay.New(relay.Params{
		DB: d.DB, Queries: q, Bus: b, Local: noLocal{}, Log: zap.NewNop(), Config: cfg,
		Now: clock.Now, After: clock.After, WallNow: clock.Now, WallAfter: clock.After,
		Leases: lease.NewHolder(d.DB, st, owner, relay.WithDefaults(cfg).Lease, clock.Now),
	})
}

// insertRows writes rows to topic, message ids m<from> to m<to>.
func insertRows(t *testing.T, d outboxtest.Database, topic string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, '{}')"),
			topic, fmt.Sprintf("m%d", i), []byte(`{}`))
		require.NoError(t, err)
	}
}

func waiting(t *testing.T, d outboxtest.Database) int {
	t.Helper()
	return outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox")
}

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, time.Minute, 5*time.Millisecond, msg)
}

// A relay deletes what it published once per window, not per batch: at
// no moment does it hold more rows published and not deleted than
// ProgressRows + BatchSize - 1 (what a kill would send again), and while
// they wait it never sends them again itself. Its window here never ends
// by time (the clock stands still): ProgressRows ends it.
func TestProgressBound(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		const rows, progressRows, batch = 20, 7, 3
		insertRows(t, d, "orders", 1, rows)
		clock := outboxtest.NewClock(time.Now())
		var (
			mu       sync.Mutex
			inserted = rows
			worst    int
		)
		pub := &publisher{}
		pub.onPublish = func(string) {
			mu.Lock()
			defer mu.Unlock()
			deleted := inserted - waiting(t, d)
			worst = max(worst, len(pub.published())+1-deleted) // this one included
		}
		r := newRelay(d, clock, "a", pub, relay.Config{BatchSize: batch, ProgressRows: progressRows, Lease: time.Hour, ProgressInterval: time.Minute})
		r.Start()
		r.Wrote([]schema.Lane{{Topic: "orders"}})
		eventually(t, func() bool { return len(pub.published()) == rows }, "every row published")

		// Rows 19 and 20 wait in the relay's window, undeleted. A new row
		// and a pass that reads the table: only the new row goes.
		mu.Lock()
		insertRows(t, d, "orders", rows+1, rows+1)
		inserted++
		mu.Unlock()
		r.Discover()
		r.Wrote([]schema.Lane{{Topic: "orders"}})
		eventually(t, func() bool { return len(pub.published()) >= rows+1 }, "the new row published")
		want := make([]string, rows+1)
		for i := range want {
			want[i] = fmt.Sprintf("m%d", i+1)
		}
		assert.Equal(t, want, pub.published(), "each row once, in order: the relay does not send again what it has not deleted yet")
		mu.Lock()
		assert.Equal(t, progressRows+batch-1, worst, "rows published and not deleted, at most: the bound after a kill")
		mu.Unlock()
		assert.Equal(t, 3, waiting(t, d), "rows 19 to 21 wait for their window's end")

		clock.Advance(time.Minute)
		eventually(t, func() bool { return waiting(t, d) == 0 }, "the window ended: recorded")
		require.NoError(t, r.Close(context.Background()))
		assert.Len(t, pub.published(), rows+1)
	})
}

// A relay stalls with rows published and not deleted; its lease runs out
// and another relay takes the lane: it publishes those rows again (the
// duplicates after a kill: exactly the stalled relay's rows not deleted),
// and the stalled relay, stopping, records no progress for rows that are
// the other's now.
func TestProgressLeaseLost(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		const rows = 7
		insertRows(t, d, "orders", 1, rows)
		start := time.Now()
		clockA, clockB := outboxtest.NewClock(start), outboxtest.NewClock(start)
		cfg := relay.Config{BatchSize: 3, ProgressRows: 100, Lease: 4 * time.Second, ProgressInterval: time.Second}
		pubA := &publisher{}
		a := newRelay(d, clockA, "a", pubA, cfg)
		a.Start()
		a.Wrote([]schema.Lane{{Topic: "orders"}})
		eventually(t, func() bool { return len(pubA.published()) == rows }, "a published every row")
		assert.Equal(t, rows, waiting(t, d), "a has deleted none: its window has not ended")

		// b's clock is past a's lease: a stalled (its clock stands still).
		clockB.Advance(cfg.Lease + time.Second)
		pubB := &publisher{}
		b := newRelay(d, clockB, "b", pubB, cfg)
		b.Start()
		b.Discover()
		eventually(t, func() bool { return len(pubB.published()) == rows }, "b took the lane over and published its rows")
		assert.Equal(t, pubA.published(), pubB.published(), "the duplicates: exactly what a had published and not deleted")

		require.NoError(t, a.Close(context.Background()))
		assert.Equal(t, rows, waiting(t, d), "a, which lost its lease, deleted none of the rows b now owns")
		assert.Len(t, pubA.published(), rows, "a sent nothing more")

		require.NoError(t, b.Close(context.Background()))
		assert.Zero(t, waiting(t, d), "b recorded its progress as it stopped")
		assert.Len(t, pubB.published(), rows)
	})
}

// The window's settings decode as the others do, durations as strings,
// and the window stays within a quarter lease, which fences its delete.
func TestProgressConfig(t *testing.T) {
	var c relay.Config
	require.NoError(t, json.Unmarshal([]byte(`{"progressInterval":"250ms","progressRows":10}`), &c))
	assert.Equal(t, 250*time.Millisecond, c.ProgressInterval)
	assert.Equal(t, 10, c.ProgressRows)
	d := relay.WithDefaults(relay.Config{})
	assert.Equal(t, 100*time.Millisecond, d.ProgressInterval)
	assert.Equal(t, 1000, d.ProgressRows)
	assert.Equal(t, time.Second, relay.WithDefaults(relay.Config{ProgressInterval: time.Minute}).ProgressInterval, "a quarter of the 4s lease")
	assert.Negative(t, relay.WithDefaults(relay.Config{ProgressInterval: -1}).ProgressInterval, "negative: every batch")
}

// With a negative ProgressInterval each batch is deleted as it is
// published, as before windows: the clock never moves here.
func TestProgressEveryBatch(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		insertRows(t, d, "orders", 1, 5)
		clock := outboxtest.NewClock(time.Now())
		pub := &publisher{}
		r := newRelay(d, clock, "a", pub, relay.Config{BatchSize: 2, ProgressInterval: -1})
		r.Start()
		r.Wrote([]schema.Lane{{Topic: "orders"}})
		// Sent is counted once the delete has returned, a moment after
		// the rows are gone for another connection: wait for both.
		eventually(t, func() bool { return waiting(t, d) == 0 && r.Stats().Sent >= 5 }, "every batch deleted as it went")
		assert.Equal(t, []string{"m1", "m2", "m3", "m4", "m5"}, pub.published())
		// Sent counts a delete once its statement returned, a moment
		// after the rows are gone.
		eventually(t, func() bool { return r.Stats().Sent == 5 }, "every row counted as sent")
		require.NoError(t, r.Close(context.Background()))
	})
}

// A delete that names rows some of which are gone already (deleted by a
// statement of the relay's own that ran past StoreTimeout and that the
// server finished after all, as MySQL does) is no lost lease: the relay
// deletes the rest of its window, over several statements, and sends
// none of it again.
func TestProgressRowsGoneAlreadyAreNoLostLease(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		const rows = 2100 // deleted in three statements of at most 1000 ids
		insertRows(t, d, "orders", 1, rows)
		clock := outboxtest.NewClock(time.Now())
		pub := &publisher{}
		r := newRelay(d, clock, "a", pub, relay.Config{BatchSize: 700, ProgressRows: 5000, Lease: time.Hour, ProgressInterval: time.Minute})
		r.Start()
		r.Wrote([]schema.Lane{{Topic: "orders"}})
		eventually(t, func() bool { return len(pub.published()) == rows }, "every row published")
		require.Equal(t, rows, waiting(t, d), "none deleted: the window has not ended")

		// As a delete of the relay's that ran late would have: the
		// window's first row is gone.
		_, err := d.DB.Exec("DELETE FROM fxcqrs_outbox WHERE message_id = 'm1'")
		require.NoError(t, err)
		clock.Advance(time.Minute)
		eventually(t, func() bool { return waiting(t, d) == 0 }, "the window recorded, whole")
		require.NoError(t, r.Close(context.Background()))
		assert.Len(t, pub.published(), rows, "none sent again")
	})
}
