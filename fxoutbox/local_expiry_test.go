package fxoutbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Quoted is a durable event that may say its own deliver-by time.
type Quoted struct {
	ID int
	By time.Time
}

// DeliverBy is the quote's deliver-by time (fxbus.Expiring).
func (q Quoted) DeliverBy() time.Time { return q.By }

// GiveQuote emits Quoted.
type GiveQuote Quoted

// Ping is a scheduled command; SchedulePing schedules one after Delay.
type (
	Ping         struct{ ID int }
	SchedulePing struct {
		ID    int
		Delay time.Duration
	}
)

// localRig is a mediator whose outbox delivers Quoted and Ping to it,
// the bus and the outbox on one fake clock, without fx.
type localRig struct {
	m      *fxcqrs.Mediator
	o      *fxoutbox.Outbox
	clock  *fakeClock
	mu     sync.Mutex
	quoted []int // the Quoted handled, by id, in order
	pinged []int
}

func newLocalRig(t *testing.T, d database, failFirst int) *localRig {
	t.Helper()
	r := &localRig{clock: newFakeClock()}
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: gc, Now: r.clock.Now}, nil, nil)
	require.NoError(t, err)
	r.o, err = fxoutbox.New(d.DB, bus, fxoutbox.Config{
		Dialect: d.Dialect, Now: r.clock.Now,
		Relay:        fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond},
		Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Quoted](), fxoutbox.ScheduledCommand[Ping]()},
		Delivery:     fxoutbox.DeliveryConfig{RetryInitial: 2 * time.Minute, RetryMax: 2 * time.Minute},
	}, nil)
	require.NoError(t, err)
	failed := false
	r.m, err = fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithMiddleware(r.o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(
			commandFunc[GiveQuote](func(ctx context.Context, q GiveQuote) error {
				fxcqrs.Emit(ctx, Quoted(q))
				return nil
			}),
			commandFunc[SchedulePing](func(ctx context.Context, c SchedulePing) error {
				_, err := fxoutbox.ScheduleAfter(ctx, c.Delay, Ping{ID: c.ID})
				return err
			}),
			commandFunc[Ping](func(_ context.Context, p Ping) error {
				r.mu.Lock()
				defer r.mu.Unlock()
				r.pinged = append(r.pinged, p.ID)
				return nil
			})),
		fxcqrs.WithEventHandlers(eventFunc[Quoted](func(_ context.Context, q Quoted) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.quoted = append(r.quoted, q.ID)
			if q.ID == failFirst && !failed {
				failed = true
				return errors.New("fails once")
			}
			return nil
		})))
	require.NoError(t, err)
	r.o.DeliverTo(r.m)
	require.NoError(t, r.o.Start(context.Background()))
	t.Cleanup(func() {
		require.NoError(t, r.m.Stop(context.Background()))
		require.NoError(t, r.o.Stop(context.Background()))
	})
	return r
}

func (r *localRig) handled() (quoted, pinged []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.quoted...), append([]int(nil), r.pinged...)
}

// deadLetter is one row of the outbox's dead letter table.
type deadLetter struct {
	id       int64
	payload  string
	reason   string
	metadata map[string]string
}

func deadLetters(t *testing.T, d database) map[int]deadLetter {
	t.Helper()
	rows, err := d.DB.Query("SELECT id, payload, error, metadata FROM fxcqrs_outbox_dead")
	require.NoError(t, err)
	defer rows.Close()
	out := map[int]deadLetter{}
	for rows.Next() {
		var (
			l       deadLetter
			payload []byte
			meta    string
		)
		require.NoError(t, rows.Scan(&l.id, &payload, &l.reason, &meta))
		l.payload = string(payload)
		require.NoError(t, json.Unmarshal([]byte(meta), &l.metadata))
		var body struct{ ID int }
		require.NoError(t, json.Unmarshal(payload, &body))
		out[body.ID] = l
	}
	require.NoError(t, rows.Err())
	return out
}

// A durable event delivered after its deliver-by time goes to the
// outbox's dead letter table with the reason "expired: …", undelivered,
// counted in Stats.Expired (among DeadLettered), never retried: one that
// says its own time (fxbus.Expiring), one whose call gave one
// (fxbus.WithDeliverBy), and one whose handler failed in time and whose
// retry came after its deliver-by (fxbus.WithDeliverWithin, a minute,
// against a retry two minutes later by the fake clock). One in time is
// delivered; a replayed expired letter is delivered whatever its time.
func TestDurableEventExpires(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		r := newLocalRig(t, d, 3)
		ctx := context.Background()
		past := r.clock.Now().Add(-time.Second)
		require.NoError(t, fxcqrs.Exec(ctx, r.m, GiveQuote{ID: 1, By: past}))
		require.NoError(t, fxcqrs.Exec(fxbus.WithDeliverBy(ctx, past), r.m, GiveQuote{ID: 2}))
		require.NoError(t, fxcqrs.Exec(fxbus.WithDeliverWithin(ctx, time.Minute), r.m, GiveQuote{ID: 3}))
		require.NoError(t, fxcqrs.Exec(fxbus.WithDeliverWithin(ctx, time.Minute), r.m, GiveQuote{ID: 4}))

		require.Eventually(t, func() bool {
			q, _ := r.handled()
			return len(q) == 2 && len(deadLetters(t, d)) == 2
		}, time.Minute, 5*time.Millisecond, "3 failed once, 4 handled, 1 and 2 expired")
		q, _ := r.handled()
		assert.ElementsMatch(t, []int{3, 4}, q)
		require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE attempts = 1") == 1 },
			time.Minute, 5*time.Millisecond, "3's retry is set, two minutes after its failure")
		r.clock.Advance(2 * time.Minute) // 3's retry is due, a minute past its deliver-by
		// The relay counts a dead letter after its move commits: wait for
		// the count too, not the row alone.
		require.Eventually(t, func() bool { return len(deadLetters(t, d)) == 3 && r.o.Stats().Expired == 3 }, time.Minute, 5*time.Millisecond)

		dead := deadLetters(t, d)
		for _, id := range []int{1, 2, 3} {
			assert.True(t, strings.HasPrefix(dead[id].reason, "expired: to be delivered by "), "%d: %s", id, dead[id].reason)
		}
		assert.Equal(t, past.UTC().Format("2006-01-02T15:04:05.000000000Z07:00"), dead[1].metadata[fxbus.MetadataDeliverBy], "stamped from the event (Expiring)")
		assert.Equal(t, past.UTC().Format("2006-01-02T15:04:05.000000000Z07:00"), dead[2].metadata[fxbus.MetadataDeliverBy], "stamped from the call's context")
		st := r.o.Stats()
		assert.Equal(t, uint64(3), st.Expired)
		assert.Equal(t, uint64(3), st.DeadLettered, "the expired among the dead letters")
		q, _ = r.handled()
		assert.ElementsMatch(t, []int{3, 4}, q, "an expired row is never delivered, nor retried")

		n, err := r.o.Admin().Replay(ctx, []int64{dead[1].id}, "ops", "the quote is wanted after all")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		r.clock.Advance(time.Second) // the relay finds a row no commit of its own announced by its poll, on its clock
		require.Eventually(t, func() bool { q, _ := r.handled(); return len(q) == 3 }, time.Minute, 5*time.Millisecond)
		q, _ = r.handled()
		assert.ElementsMatch(t, []int{1, 3, 4}, q, "a replay is delivered whatever its deliver-by")
		assert.Equal(t, uint64(3), r.o.Stats().Expired)
	})
}

// A scheduled command's deliver-by counts from its due time: one due in
// an hour, run a minute after it, is in time though it was scheduled far
// more than its five minutes before; one due in half an hour and run six
// minutes late is dead-lettered as expired, never run.
func TestScheduledCommandExpires(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		r := newLocalRig(t, d, 0)
		start := r.clock.Now()
		ctx := fxbus.WithDeliverWithin(context.Background(), 5*time.Minute)
		require.NoError(t, fxcqrs.Exec(ctx, r.m, SchedulePing{ID: 1, Delay: time.Hour}))
		require.NoError(t, fxcqrs.Exec(ctx, r.m, SchedulePing{ID: 2, Delay: 30 * time.Minute}))

		r.clock.Advance(36 * time.Minute) // 2 is due, six minutes late
		require.Eventually(t, func() bool { return len(deadLetters(t, d)) == 1 }, time.Minute, 5*time.Millisecond)
		dead := deadLetters(t, d)[2]
		assert.True(t, strings.HasPrefix(dead.reason, "expired: to be delivered by "), dead.reason)
		assert.Equal(t, start.Add(35*time.Minute).Format("2006-01-02T15:04:05.000000000Z07:00"), dead.metadata[fxbus.MetadataDeliverBy],
			"five minutes after its due time")

		r.clock.Advance(25 * time.Minute) // 1 is due, a minute late: in time
		require.Eventually(t, func() bool { _, p := r.handled(); return len(p) == 1 }, time.Minute, 5*time.Millisecond)
		_, pinged := r.handled()
		assert.Equal(t, []int{1}, pinged)
		assert.Equal(t, uint64(1), r.o.Stats().Expired)
		assert.Len(t, deadLetters(t, d), 1)
	})
}

// A durable row whose deliver-by is no time is malformed: dead-lettered
// at once, undelivered, not counted as expired.
func TestDurableRowWithUnreadableDeliverBy(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		r := newLocalRig(t, d, 0)
		_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?)"),
			"fxcqrs.local", "m-1", []byte(`{"ID":7}`), `{"name":"Quoted","deliver_by":"tomorrow"}`, r.clock.Now().UnixNano())
		require.NoError(t, err)
		r.clock.Advance(time.Second) // the relay's poll finds the row
		// The relay counts a dead letter after its move commits: wait for
		// the count too.
		require.Eventually(t, func() bool { return len(deadLetters(t, d)) == 1 && r.o.Stats().DeadLettered == 1 }, time.Minute, 5*time.Millisecond)
		assert.True(t, strings.HasPrefix(deadLetters(t, d)[7].reason, `malformed: the "deliver_by" metadata is no RFC 3339 time: `), deadLetters(t, d)[7].reason)
		q, _ := r.handled()
		assert.Empty(t, q)
		assert.Zero(t, r.o.Stats().Expired)
		assert.Equal(t, uint64(1), r.o.Stats().DeadLettered)
	})
}
