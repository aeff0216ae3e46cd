package fxsaga_test

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Paid is what the payment service publishes when an order is paid.
type Paid struct {
	OrderID string
	Payment string
}

// clock is a fake clock the tests move by hand.
type clock = outboxtest.Clock

func newClock() *clock { return outboxtest.NewClock(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)) }

// awaitPayment waits for the order's Paid, for half an hour, and records
// the payment in the saga's context.
func awaitPayment(onTimeout fxsaga.Step[Order]) fxsaga.Step[Order] {
	return fxsaga.Await(fxsaga.Wait[Order, Paid]{
		Key:    func(o *Order) string { return strconv.Itoa(o.ID) },
		Match:  func(p Paid) string { return p.OrderID },
		Within: 30 * time.Minute,
		Then: func(_ context.Context, o *Order, p Paid) error {
			o.Shipment = "paid by " + p.Payment
			return nil
		},
		OnTimeout: onTimeout,
	})
}

// Remind is a step that runs when the payment did not come in time.
type Remind struct{ step }

func waitingSaga(w *world, onTimeout fxsaga.Step[Order]) *fxsaga.Saga[Order] {
	return fxsaga.Define[Order]("paid order",
		Reserve{step{"reserve", w, func(o *Order) { o.Reserved = true }}},
		awaitPayment(onTimeout),
		Ship{step{"ship", w, func(o *Order) { o.Charged = 1 }}},
	)
}

// waitRig is a runner on a Memory store, whose mediator has the resumer
// of Paid and the deadline handler.
func waitRig(t *testing.T, c *clock) (*fxsaga.Runner, *fxcqrs.Mediator, *fxsaga.Memory) {
	t.Helper()
	resume, deadlines := fxsaga.NewResumer[Paid](), fxsaga.NewDeadlineHandler()
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}, deadlines),
		fxcqrs.WithEventHandlers(resume))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	store := fxsaga.NewMemory()
	r := fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{CompensationAttempts: 2, CompensationBackoff: time.Microsecond, Now: c.Now}, nil)
	resume.Bind(r)
	deadlines.Bind(r)
	return r, m, store
}

// A saga that reaches a wait returns at once, saved as waiting; the event
// that matches its key resumes it, hands it the event's data, and the
// steps after it run; an event of another key, or the same one again,
// resumes nothing and is counted.
func TestAwaitResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	r, m, store := waitRig(t, c)
	w := newWorld()
	s := waitingSaga(w, nil)

	o, err := fxsaga.Run(ctx, r, s, Order{ID: 7})
	var pending *fxsaga.Pending
	require.ErrorAs(t, err, &pending)
	assert.Equal(t, "fxsaga_test.Paid", pending.Event)
	assert.Equal(t, "7", pending.Key)
	assert.Equal(t, "wait for Paid", pending.Step)
	assert.Equal(t, c.Now().Add(30*time.Minute), pending.Until)
	assert.True(t, o.Reserved)
	st, err := store.Load(ctx, pending.SagaID)
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Waiting, st.Status)
	assert.Equal(t, pending.Event, st.Awaiting)
	waiting, err := store.Waiting(ctx, "paid order", 10)
	require.NoError(t, err)
	require.Len(t, waiting, 1, "listed with what it waits for")
	assert.Equal(t, []string{"act reserve"}, w.history(), "nothing after the wait ran")

	require.NoError(t, fxcqrs.Publish(ctx, m, Paid{OrderID: "8", Payment: "p-8"}))
	assert.Equal(t, int64(1), r.Unmatched(), "another order's payment")
	st, _ = store.Load(ctx, pending.SagaID)
	assert.Equal(t, fxsaga.Waiting, st.Status)

	require.NoError(t, fxcqrs.Publish(ctx, m, Paid{OrderID: "7", Payment: "p-7"}))
	st, err = store.Load(ctx, pending.SagaID)
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Completed, st.Status)
	assert.JSONEq(t, `{"ID":7,"Reserved":true,"Charged":1,"Shipment":"paid by p-7"}`, string(st.Context))
	assert.Equal(t, []string{"act reserve", "act ship"}, w.history())
	assert.Equal(t, uint64(1), r.Stats().Resumed)

	require.NoError(t, fxcqrs.Publish(ctx, m, Paid{OrderID: "7", Payment: "p-7"}))
	assert.Equal(t, int64(2), r.Unmatched(), "a duplicate never resumes a finished saga")
	assert.Equal(t, []string{"act reserve", "act ship"}, w.history())
}

// At the deadline, without an OnTimeout step, the saga compensates what
// it did (here by recovery, the timer of a store without the outbox); the
// payment that comes after resumes nothing.
func TestAwaitDeadlineCompensates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	r, m, store := waitRig(t, c)
	w := newWorld()
	s := waitingSaga(w, nil)
	_, err := fxsaga.Run(ctx, r, s, Order{ID: 7})
	var pending *fxsaga.Pending
	require.ErrorAs(t, err, &pending)

	c.Advance(29 * time.Minute)
	require.NoError(t, fxsaga.Recover(ctx, r, s))
	st, _ := store.Load(ctx, pending.SagaID)
	require.Equal(t, fxsaga.Waiting, st.Status, "never before its deadline")

	c.Advance(2 * time.Minute)
	require.NoError(t, fxsaga.Recover(ctx, r, s))
	st, _ = store.Load(ctx, pending.SagaID)
	assert.Equal(t, fxsaga.Compensated, st.Status)
	assert.Contains(t, st.Error, "no fxsaga_test.Paid within 30m0s")
	assert.Equal(t, []string{"act reserve", "undo reserve"}, w.history())
	assert.Equal(t, uint64(1), r.Stats().TimedOut)

	require.NoError(t, fxcqrs.Publish(ctx, m, Paid{OrderID: "7", Payment: "late"}))
	assert.Equal(t, int64(1), r.Unmatched())
	assert.Equal(t, []string{"act reserve", "undo reserve"}, w.history(), "a late event never resumes a compensated saga")
}

// The deadline handler (what the outbox delivers at the deadline) times
// the saga out once; a deadline of a version the saga has left does
// nothing.
func TestDeadlineHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	r, m, store := waitRig(t, c)
	w := newWorld()
	_, err := fxsaga.Run(ctx, r, waitingSaga(w, nil), Order{ID: 3})
	var pending *fxsaga.Pending
	require.ErrorAs(t, err, &pending)
	st, _ := store.Load(ctx, pending.SagaID)

	stale := fxsaga.Deadline{Saga: "paid order", ID: st.ID, Step: st.Step, Version: st.Version - 1}
	require.NoError(t, fxcqrs.Exec(ctx, m, stale))
	now, _ := store.Load(ctx, pending.SagaID)
	require.Equal(t, fxsaga.Waiting, now.Status, "a stale deadline does nothing")

	due := fxsaga.Deadline{Saga: "paid order", ID: st.ID, Step: st.Step, Version: st.Version}
	require.NoError(t, fxcqrs.Exec(ctx, m, due))
	require.NoError(t, fxcqrs.Exec(ctx, m, due), "delivered twice: the second finds it moved on")
	now, _ = store.Load(ctx, pending.SagaID)
	assert.Equal(t, fxsaga.Compensated, now.Status)
	assert.Equal(t, []string{"act reserve", "undo reserve"}, w.history())
}

// With an OnTimeout step, the deadline runs it and the saga goes on; when
// a later step fails, compensation undoes the OnTimeout step, then what
// came before.
func TestAwaitOnTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	r, _, store := waitRig(t, c)
	w := newWorld()
	remind := Remind{step{"remind", w, func(o *Order) { o.Shipment = "reminded" }}}
	s := waitingSaga(w, remind)
	_, err := fxsaga.Run(ctx, r, s, Order{ID: 5})
	var pending *fxsaga.Pending
	require.ErrorAs(t, err, &pending)
	c.Advance(time.Hour)
	require.NoError(t, fxsaga.Recover(ctx, r, s))
	st, _ := store.Load(ctx, pending.SagaID)
	assert.Equal(t, fxsaga.Completed, st.Status)
	assert.Equal(t, []string{"act reserve", "act remind", "act ship"}, w.history())

	w2 := newWorld()
	w2.failAct["ship"] = true
	s2 := waitingSaga(w2, Remind{step{"remind", w2, func(o *Order) {}}})
	_, err = fxsaga.Run(ctx, r, s2, Order{ID: 6})
	require.ErrorAs(t, err, &pending)
	c.Advance(time.Hour)
	err = fxsaga.Recover(ctx, r, s2)
	require.NoError(t, err, "a compensated saga is an outcome, not a recovery failure")
	st, _ = store.Load(ctx, pending.SagaID)
	assert.Equal(t, fxsaga.Compensated, st.Status)
	assert.Equal(t, []string{"act reserve", "act remind", "undo remind", "undo reserve"}, w2.history())
}

// When the OnTimeout step itself fails, compensation starts at the step
// that waited (its own act committed before it waited), not at the
// OnTimeout step, whose act did not commit; the error names the OnTimeout
// step's failure.
func TestAwaitOnTimeoutFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	r, _, store := waitRig(t, c)
	w := newWorld()
	w.failAct["remind"] = true
	s := waitingSaga(w, Remind{step{"remind", w, func(*Order) {}}})
	_, err := fxsaga.Run(ctx, r, s, Order{ID: 7})
	var pending *fxsaga.Pending
	require.ErrorAs(t, err, &pending)
	c.Advance(time.Hour)
	require.NoError(t, fxsaga.Recover(ctx, r, s), "a compensated saga is an outcome, not a recovery failure")
	st, err := store.Load(ctx, pending.SagaID)
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Compensated, st.Status)
	assert.Empty(t, st.TimedOut, "the timed-out step is compensated as a plain one")
	assert.Contains(t, st.Error, "remind refused")
	assert.Equal(t, []string{"act reserve", "undo reserve"}, w.history())
}

// Stream ends with the *Pending of a saga that waits.
func TestStreamWaits(t *testing.T) {
	t.Parallel()
	r, _, _ := waitRig(t, newClock())
	w := newWorld()
	var got []string
	var last error
	for p, err := range fxsaga.Stream(context.Background(), r, waitingSaga(w, nil), Order{ID: 1}) {
		if err != nil {
			last = err
			continue
		}
		got = append(got, p.Action+" "+p.Step)
	}
	assert.Equal(t, []string{"act Reserve"}, got)
	var pending *fxsaga.Pending
	require.ErrorAs(t, last, &pending)
	assert.NotEmpty(t, pending.SagaID)
}

// A wait that could never end, or never match, does not define.
func TestAwaitChecksItsDefinition(t *testing.T) {
	t.Parallel()
	s := fxsaga.Define[Order]("bad", fxsaga.Await(fxsaga.Wait[Order, Paid]{}))
	_, err := fxsaga.Run(context.Background(), newRunner(t, fxsaga.NewMemory()), s, Order{})
	require.Error(t, err)
	for _, want := range []string{"step 1", "Key is nil", "Match is nil", "Within must be positive"} {
		assert.ErrorContains(t, err, want)
	}
	s = fxsaga.Define[Order]("bad", fxsaga.Await(fxsaga.Wait[Order, any]{
		Key: func(*Order) string { return "" }, Match: func(any) string { return "" }, Within: time.Second,
	}))
	_, err = fxsaga.Run(context.Background(), newRunner(t, fxsaga.NewMemory()), s, Order{})
	assert.ErrorContains(t, err, "is an interface")

	// A wait past 2262 would wrap round to a deadline in the past and
	// compensate at once: refused, naming the limit.
	for _, within := range []time.Duration{time.Duration(math.MaxInt64), fxsaga.MaxWithin + time.Nanosecond} {
		s = fxsaga.Define[Order]("long", awaitPaymentWithin(within))
		_, err = fxsaga.Run(context.Background(), newRunner(t, fxsaga.NewMemory()), s, Order{})
		assert.ErrorContains(t, err, "Within is at most MaxWithin", "%v", within)
	}
	s = fxsaga.Define[Order]("longest", awaitPaymentWithin(fxsaga.MaxWithin))
	_, err = fxsaga.Run(context.Background(), newRunner(t, fxsaga.NewMemory()), s, Order{})
	assert.NotContains(t, fmt.Sprint(err), "MaxWithin", "a hundred years is allowed")
}

func awaitPaymentWithin(within time.Duration) fxsaga.Step[Order] {
	return fxsaga.Await(fxsaga.Wait[Order, Paid]{
		Key: func(o *Order) string { return strconv.Itoa(o.ID) }, Match: func(p Paid) string { return p.OrderID }, Within: within,
	})
}

// A Key that returns "" fails the step: nothing could ever resume it.
func TestAwaitEmptyKeyCompensates(t *testing.T) {
	t.Parallel()
	w := newWorld()
	r, _, _ := waitRig(t, newClock())
	s := fxsaga.Define[Order]("empty key",
		Reserve{step{"reserve", w, func(o *Order) {}}},
		fxsaga.Await(fxsaga.Wait[Order, Paid]{
			Key: func(*Order) string { return "" }, Match: func(p Paid) string { return p.OrderID }, Within: time.Minute,
		}))
	_, err := fxsaga.Run(context.Background(), r, s, Order{})
	var sagaErr *fxsaga.Error
	require.ErrorAs(t, err, &sagaErr)
	assert.Equal(t, fxsaga.Compensated, sagaErr.Status)
	assert.ErrorContains(t, err, `Key returned ""`)
	assert.Equal(t, []string{"act reserve", "undo reserve"}, w.history())
}

// The diagram shows the wait, its event, its deadline and its timeout
// branch.
func TestMermaidWaits(t *testing.T) {
	t.Parallel()
	w := newWorld()
	got := waitingSaga(w, Remind{step{"remind", w, nil}}).Mermaid()
	for _, want := range []string{
		"act1{{wait for Paid}}",
		`act1 -- "fxsaga_test.Paid" --> act2`,
		`act1 -. "no fxsaga_test.Paid within 30m0s" .-> timeout1`,
		"timeout1[Remind]", "timeout1 --> act2", "timeout1 -. fails .-> comp1",
		"act0 --> act1", "act2 --> done",
	} {
		assert.Contains(t, got, want)
	}
	got = waitingSaga(w, nil).Mermaid()
	assert.Contains(t, got, `act1 -. "no fxsaga_test.Paid within 30m0s" .-> comp1`)
	assert.Equal(t, got, waitingSaga(w, nil).Mermaid(), "the same every time")
}

// A saga that waits holds nothing in the runner: no goroutine, no entry.
func TestWaitingSagasHoldNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, _, _ := waitRig(t, newClock())
	s := waitingSaga(newWorld(), nil)
	for i := range 100 {
		_, err := fxsaga.Run(ctx, r, s, Order{ID: i})
		var pending *fxsaga.Pending
		require.ErrorAs(t, err, &pending)
	}
	assert.Zero(t, fxsaga.Driving(r))
}
