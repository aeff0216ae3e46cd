package fxbus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Quote is an event that says itself when it is worth nothing.
type Quote struct {
	ID         int
	ValidUntil time.Time
}

func (q Quote) DeliverBy() time.Time { return q.ValidUntil }

// deliverBy reads a message's deliver-by metadata, "" without one.
func deliverBy(t *testing.T, msg *message.Message) string {
	t.Helper()
	return msg.Metadata.Get(fxbus.MetadataDeliverBy)
}

func stamp(at time.Time) string { return at.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") }

// A route's DeliverWithin, a call's WithDeliverBy or WithDeliverWithin,
// and an Expiring event each give a message a deliver-by time, the
// earliest winning; a relative one counts from the bus's clock, or from
// WithDueTime; a route without one sends the same event without it.
func TestDeliverByIsStamped(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	now := clock.Now()
	b, err := fxbus.New(fxbus.Config{Publisher: goChannel(t), Now: clock.Now}, []fxbus.Routing{
		fxbus.NewRoute[OrderPlaced]("quoted", fxbus.DeliverWithin(time.Minute)),
		fxbus.NewRoute[OrderPlaced]("kept"),
		fxbus.NewRoute[Quote]("quotes"),
		fxbus.NewRoute[*Quote]("quote-pointers", fxbus.Name("QuotePointer")),
	}, nil)
	require.NoError(t, err)
	byTopic := func(ctx context.Context, events ...any) map[string][]string {
		out, fails := b.Messages(ctx, events)
		require.Empty(t, fails)
		got := map[string][]string{}
		for _, o := range out {
			got[o.Topic] = append(got[o.Topic], deliverBy(t, o.Message))
		}
		return got
	}
	ctx := context.Background()
	ev := OrderPlaced{ID: 1}

	assert.Equal(t, map[string][]string{"quoted": {stamp(now.Add(time.Minute))}, "kept": {""}}, byTopic(ctx, ev),
		"the route's DeliverWithin counts from the bus's clock; the other route's copy has none")
	assert.Equal(t, map[string][]string{"quoted": {stamp(now.Add(30 * time.Second))}, "kept": {stamp(now.Add(30 * time.Second))}},
		byTopic(fxbus.WithDeliverBy(ctx, now.Add(30*time.Second)), ev), "the call's earlier time wins on both routes")
	assert.Equal(t, map[string][]string{"quoted": {stamp(now.Add(time.Minute))}, "kept": {stamp(now.Add(time.Hour))}},
		byTopic(fxbus.WithDeliverBy(fxbus.WithDeliverBy(ctx, now.Add(2*time.Hour)), now.Add(time.Hour)), ev),
		"given twice, the earlier holds; the route's is earlier still")
	assert.Equal(t, map[string][]string{"quoted": {stamp(now.Add(10 * time.Second))}, "kept": {stamp(now.Add(10 * time.Second))}},
		byTopic(fxbus.WithDeliverWithin(fxbus.WithDeliverWithin(ctx, 10*time.Second), time.Hour), ev), "the shorter duration holds")
	due := now.Add(24 * time.Hour)
	assert.Equal(t, map[string][]string{"quoted": {stamp(due.Add(time.Minute))}, "kept": {""}},
		byTopic(fxbus.WithDueTime(ctx, due), ev), "a scheduled message's deliver-by counts from its due time")
	assert.Equal(t, map[string][]string{"quotes": {stamp(now.Add(5 * time.Second)), ""}},
		byTopic(ctx, Quote{ID: 1, ValidUntil: now.Add(5 * time.Second)}, Quote{ID: 2}), "an Expiring event's own time; a zero one is none")
	assert.Equal(t, map[string][]string{"quotes": {stamp(now.Add(time.Second))}},
		byTopic(fxbus.WithDeliverBy(ctx, now.Add(time.Second)), Quote{ID: 1, ValidUntil: now.Add(5 * time.Second)}),
		"the call's earlier time beats the event's")
	assert.Equal(t, ctx, fxbus.WithDeliverWithin(ctx, 0), "no duration, no change")
	assert.Equal(t, map[string][]string{"quoted": {stamp(now.Add(time.Minute))}, "kept": {stamp(now.Add(time.Hour))}},
		byTopic(fxbus.WithDeliverBy(fxbus.WithDeliverBy(ctx, now.Add(time.Hour)), time.Time{}), ev),
		"a zero time gives none, and does not erase the one given before")
	assert.Equal(t, map[string][]string{"quote-pointers": {""}}, byTopic(ctx, (*Quote)(nil)),
		"a nil pointer of an Expiring type (a value-receiver DeliverBy) has no deliver-by, and does not panic")

	_, err = fxbus.New(fxbus.Config{Publisher: goChannel(t)}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced]("x", fxbus.DeliverWithin(0))}, nil)
	assert.ErrorContains(t, err, "fxbus.Route[fxbus_test.OrderPlaced]: DeliverWithin must be positive: got 0s")
}

// deadLetterLog records what the bus records as dead letters.
type deadLetterLog struct {
	mu      sync.Mutex
	reasons map[string]error // by message id
	parked  map[string]error // by message id, recorded as parking its key
}

func newDeadLetterLog() *deadLetterLog {
	return &deadLetterLog{reasons: map[string]error{}, parked: map[string]error{}}
}

func (d *deadLetterLog) RecordDeadLetter(_ context.Context, _ string, msg *message.Message, reason error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reasons[msg.UUID] = reason
	return nil
}

func (d *deadLetterLog) reason(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reasons[id]
}

// parkingLog is a deadLetterLog that parks keys, as the outbox's Admin
// does: a message of a parked key is parked behind it.
type parkingLog struct{ *deadLetterLog }

var _ fxbus.Parking = parkingLog{}

func (p parkingLog) RecordParked(_ context.Context, _, _ string, msg *message.Message, reason error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked[msg.UUID] = reason
	return nil
}

func (p parkingLog) ParkedKeys(context.Context, string) ([]fxbus.ParkedKey, error) { return nil, nil }

func (p parkingLog) Admit(_ context.Context, _, _ string, msg *message.Message) (fxbus.Admission, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked[msg.UUID] = errors.New("parked")
	return fxbus.AdmitParked, nil
}

func (p parkingLog) Arrived(context.Context, string, string, string) error       { return nil }
func (p parkingLog) Repark(context.Context, string, string, string, error) error { return nil }

// consumeOrders starts a bus and a mediator consuming OrderPlaced on tp
// with h, on the bus's clock now, until the test ends.
func consumeOrders(t *testing.T, gc message.Publisher, sub message.Subscriber, tp string, cfg fxbus.Config, h func(context.Context, OrderPlaced) error, opts ...fxbus.SubscribeOption) *fxbus.Bus {
	t.Helper()
	cfg.Publisher, cfg.Subscriber = gc, sub
	b, err := fxbus.New(cfg, nil, []fxbus.Subscription{fxbus.NewSubscription[OrderPlaced](tp, opts...)})
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](h)), fxcqrs.WithForwarder(b))
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background(), m))
	t.Cleanup(func() {
		assert.NoError(t, b.Stop(context.Background()))
		assert.NoError(t, m.Stop(context.Background()))
	})
	return b
}

// orderMessage is an OrderPlaced of id on the wire, with a deliver-by
// metadata when by is not "".
func orderMessage(id int, by string) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"id":`+string(rune('0'+id))+`}`))
	msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
	if by != "" {
		msg.Metadata.Set(fxbus.MetadataDeliverBy, by)
	}
	return msg
}

// A message received after its deliver-by time goes to the dead letter,
// unhandled, with the reason "expired", counted and logged at info level;
// one received at or before it is handled; a replay is handled whatever
// its deliver-by; an unreadable deliver-by is a malformed message.
func TestExpiredMessageIsDeadLettered(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "quotes")
	dead := deadLetters(t, gc, tp+"_poison")
	clock := newFakeClock()
	now := clock.Now()
	core, logs := observer.New(zapcore.InfoLevel)
	rec := newDeadLetterLog()
	handled := newInbox[int]()
	b := consumeOrders(t, gc, gc, tp, fxbus.Config{Now: clock.Now, Logger: zap.New(core), DeadLetters: rec},
		func(_ context.Context, e OrderPlaced) error { handled.add(e.ID); return nil })

	late := orderMessage(1, stamp(now.Add(-time.Nanosecond)))
	replay := orderMessage(5, stamp(now.Add(-time.Hour)))
	replay.Metadata.Set(fxbus.MetadataReplay, "1")
	garbled := orderMessage(4, "tomorrow")
	for _, msg := range []*message.Message{
		late,
		orderMessage(2, stamp(now)), // at its deliver-by: in time
		orderMessage(3, "2026-12-07T13:00:00+01:00"), // now, in another zone, without nanoseconds
		garbled,
		replay,
		orderMessage(6, ""),
	} {
		require.NoError(t, gc.Publish(tp, msg))
	}
	got := map[string]*message.Message{}
	for range 2 {
		msg := <-dead
		msg.Ack()
		got[msg.UUID] = msg
	}
	require.Contains(t, got, late.UUID)
	require.Contains(t, got, garbled.UUID)
	reason := got[late.UUID].Metadata.Get(middleware.ReasonForPoisonedKey)
	assert.Equal(t, "expired: to be delivered by "+stamp(now.Add(-time.Nanosecond))+", received at "+stamp(now), reason)
	assert.Equal(t, stamp(now.Add(-time.Nanosecond)), deliverBy(t, got[late.UUID]), "the dead letter keeps its deliver-by")
	assert.ErrorIs(t, rec.reason(late.UUID), fxbus.ErrExpired, "the recorder is told why")
	assert.Contains(t, got[garbled.UUID].Metadata.Get(middleware.ReasonForPoisonedKey), `malformed message: the "deliver_by" metadata is no RFC 3339 time`)

	assert.ElementsMatch(t, []int{2, 3, 5, 6}, handled.wait(t, 4), "the expired and the garbled one never handled")
	require.Eventually(t, func() bool { return b.Stats().Handled == 4 }, time.Minute, time.Millisecond)
	st := b.Stats()
	assert.Equal(t, uint64(1), st.Expired)
	assert.Equal(t, uint64(2), st.DeadLettered, "the expired one is among the dead-lettered")
	// Counted once, apart from the failures: when one count held both and
	// an expiry added to it and then to Expired, a Stats read between the
	// two saw DeadLettered-Expired (otelops's dead_lettered) go down.
	assert.Equal(t, uint64(1), fxbus.FailuresForTest(b), "the garbled one only")
	assert.Zero(t, st.Retried, "neither is retried")

	lines := logs.FilterMessage("message expired: dead-lettered unhandled").All()
	require.Len(t, lines, 1)
	assert.Equal(t, zapcore.InfoLevel, lines[0].Level)
	assert.Equal(t, late.UUID, lines[0].ContextMap()["messageId"])
	for _, l := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
		assert.NotEqual(t, late.UUID, l.ContextMap()["messageId"], "no warning for an expired message: %s", l.Message)
	}
}

// A message in time whose handler fails is retried while in time; the
// retry after its deliver-by does not run its handler: it is dead-lettered
// as expired.
func TestExpiryEndsRetries(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "retried")
	dead := deadLetters(t, gc, tp+"_poison")
	clock := newFakeClock()
	var calls atomic.Int32
	b := consumeOrders(t, gc, gc, tp, fxbus.Config{Now: clock.Now},
		func(context.Context, OrderPlaced) error {
			calls.Add(1)
			clock.Advance(time.Minute) // the attempt takes past the deliver-by
			return errors.New("ledger busy")
		},
		fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 5, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}))
	msg := orderMessage(1, stamp(clock.Now().Add(30*time.Second)))
	require.NoError(t, gc.Publish(tp, msg))
	got := <-dead
	got.Ack()
	assert.Equal(t, msg.UUID, got.UUID)
	assert.Contains(t, got.Metadata.Get(middleware.ReasonForPoisonedKey), "expired: ")
	assert.Equal(t, int32(1), calls.Load(), "the retry after the deliver-by did not run the handler")
	require.Eventually(t, func() bool { return b.Stats().Expired == 1 }, time.Minute, time.Millisecond)
	assert.Equal(t, uint64(1), b.Stats().Retried, "one retry, which found it expired, and no more")
}

// Under InOrder, an expired message is dead-lettered without parking its
// key: it is not a failure, and the key's later messages go on.
func TestExpiredMessageDoesNotParkItsKey(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "keyed")
	dead := deadLetters(t, gc, tp+"_poison")
	clock := newFakeClock()
	rec := newDeadLetterLog()
	handled := newInbox[int]()
	consumeOrders(t, gc, gc, tp, fxbus.Config{Now: clock.Now, DeadLetters: parkingLog{rec}},
		func(_ context.Context, e OrderPlaced) error { handled.add(e.ID); return nil }, fxbus.InOrder())
	late := orderMessage(1, stamp(clock.Now().Add(-time.Second)))
	next := orderMessage(2, "")
	late.Metadata.Set(fxbus.MetadataKey, "k")
	next.Metadata.Set(fxbus.MetadataKey, "k")
	require.NoError(t, gc.Publish(tp, late))
	(<-dead).Ack()
	require.NoError(t, gc.Publish(tp, next)) // after: GoChannel hands concurrent publishes over in any order
	assert.Equal(t, []int{2}, handled.wait(t, 1), "the key's next message is handled")
	assert.ErrorIs(t, rec.reason(late.UUID), fxbus.ErrExpired, "recorded as a dead letter")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	assert.Empty(t, rec.parked, "nothing parked")
}
