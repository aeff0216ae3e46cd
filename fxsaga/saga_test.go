package fxsaga_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// Order is the saga's context.
type Order struct {
	ID       int
	Reserved bool
	Charged  int
	Shipment string
}

// world records what the steps did to the outside, by idempotency key.
type world struct {
	mu       sync.Mutex
	did      []string
	keys     map[string]int
	failAct  map[string]bool
	failComp map[string]int // compensation failures left, per step
}

func newWorld() *world {
	return &world{keys: map[string]int{}, failAct: map[string]bool{}, failComp: map[string]int{}}
}

func (w *world) record(ctx context.Context, what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.did = append(w.did, what)
	w.keys[fxsaga.IdempotencyKey(ctx)]++
}

func (w *world) history() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.did...)
}

// step is a saga step named for what it does to the world.
type step struct {
	name string
	w    *world
	act  func(*Order)
}

func (s step) Act(ctx context.Context, o *Order) error {
	s.w.mu.Lock()
	fail := s.w.failAct[s.name]
	s.w.mu.Unlock()
	if fail {
		return errors.New(s.name + " refused")
	}
	s.act(o)
	s.w.record(ctx, "act "+s.name)
	return nil
}

func (s step) Compensate(ctx context.Context, _ *Order) error {
	s.w.mu.Lock()
	if s.w.failComp[s.name] != 0 {
		if s.w.failComp[s.name] > 0 {
			s.w.failComp[s.name]--
		}
		s.w.mu.Unlock()
		return errors.New("undo " + s.name + " failed")
	}
	s.w.mu.Unlock()
	s.w.record(ctx, "undo "+s.name)
	return nil
}

// Reserve, Charge and Ship are distinct step types, as an application's
// are.
type (
	Reserve struct{ step }
	Charge  struct{ step }
	Ship    struct{ step }
)

func orderSaga(w *world) *fxsaga.Saga[Order] {
	return fxsaga.Define[Order]("order",
		Reserve{step{"reserve", w, func(o *Order) { o.Reserved = true }}},
		Charge{step{"charge", w, func(o *Order) { o.Charged = 1999 }}},
		Ship{step{"ship", w, func(o *Order) { o.Shipment = fmt.Sprint("parcel-", o.ID) }}},
	)
}

func newRunner(t *testing.T, store fxsaga.Store) *fxsaga.Runner {
	t.Helper()
	return newLoggedRunner(t, store, nil)
}

func newLoggedRunner(t *testing.T, store fxsaga.Store, logger *zap.Logger) *fxsaga.Runner {
	t.Helper()
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	return fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{CompensationAttempts: 3, CompensationBackoff: time.Microsecond}, logger)
}

func TestHappyPath(t *testing.T) {
	t.Parallel()
	w := newWorld()
	store := fxsaga.NewMemory()
	o, err := fxsaga.Run(context.Background(), newRunner(t, store), orderSaga(w), Order{ID: 7})
	require.NoError(t, err)
	assert.Equal(t, Order{ID: 7, Reserved: true, Charged: 1999, Shipment: "parcel-7"}, o, "each step saw and changed the context")
	assert.Equal(t, []string{"act reserve", "act charge", "act ship"}, w.history())
	for key, n := range w.keys {
		assert.Equal(t, 1, n, key)
	}
	assert.Len(t, w.keys, 3, "one idempotency key per act")
}

// A failure at each position compensates exactly the completed steps, in
// reverse.
func TestFailureCompensatesInReverse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fail string
		want []string
	}{
		{"reserve", []string{}},
		{"charge", []string{"act reserve", "undo reserve"}},
		{"ship", []string{"act reserve", "act charge", "undo charge", "undo reserve"}},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			t.Parallel()
			w := newWorld()
			w.failAct[tc.fail] = true
			store := fxsaga.NewMemory()
			_, err := fxsaga.Run(context.Background(), newRunner(t, store), orderSaga(w), Order{ID: 1})
			var sagaErr *fxsaga.Error
			require.ErrorAs(t, err, &sagaErr)
			assert.Equal(t, fxsaga.Compensated, sagaErr.Status)
			assert.Equal(t, map[string]string{"reserve": "Reserve", "charge": "Charge", "ship": "Ship"}[tc.fail], sagaErr.Step)
			assert.ErrorContains(t, err, tc.fail+" refused")
			assert.Equal(t, tc.want, append([]string{}, w.history()...))
			st, err := store.Load(context.Background(), sagaErr.SagaID)
			require.NoError(t, err)
			assert.Equal(t, fxsaga.Compensated, st.Status)
		})
	}
}

// A compensation is retried; one that keeps failing leaves the saga Failed,
// visible in the store, never silently stuck.
func TestCompensationRetriesThenFails(t *testing.T) {
	t.Parallel()
	w := newWorld()
	w.failAct["ship"] = true
	w.failComp["charge"] = 2 // fails twice, then works
	store := fxsaga.NewMemory()
	core, logs := observer.New(zap.ErrorLevel)
	r := newLoggedRunner(t, store, zap.New(core))
	_, err := fxsaga.Run(context.Background(), r, orderSaga(w), Order{ID: 2})
	var sagaErr *fxsaga.Error
	require.ErrorAs(t, err, &sagaErr)
	assert.Equal(t, fxsaga.Compensated, sagaErr.Status, "the third try worked")
	assert.Zero(t, logs.Len(), "nothing to tell a person")

	w2 := newWorld()
	w2.failAct["ship"] = true
	w2.failComp["charge"] = -1 // always fails
	_, err = fxsaga.Run(context.Background(), r, orderSaga(w2), Order{ID: 3})
	require.ErrorAs(t, err, &sagaErr)
	assert.Equal(t, fxsaga.Failed, sagaErr.Status)
	assert.ErrorContains(t, sagaErr.Compensation, "undo charge failed")
	require.Len(t, store.Failed(), 1)
	assert.Equal(t, []string{"act reserve", "act charge"}, w2.history(), "reserve is not undone past a failed compensation")
	var tries int
	for _, e := range store.Entries(sagaErr.SagaID) {
		if e.Action == "compensate" && e.Step == 1 {
			tries++
		}
	}
	assert.Equal(t, 3, tries, "CompensationAttempts")
	st := r.Stats()
	assert.Equal(t, uint64(1), st.Failed)
	assert.Equal(t, uint64(2+3), st.CompensationFailures, "two failures of the first saga's, three of the second's")
	assert.Equal(t, uint64(2), st.Compensations, "charge and reserve of the first saga")
	counts, err := store.Counts(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []fxsaga.Count{{Name: "order", Status: fxsaga.Compensated, N: 1}, {Name: "order", Status: fxsaga.Failed, N: 1}}, counts)
	require.Equal(t, 1, logs.Len(), "a Failed saga is logged at error level")
	entry := logs.All()[0]
	assert.Equal(t, sagaErr.SagaID, entry.ContextMap()["id"])
	assert.Equal(t, "Charge", entry.ContextMap()["step"])
}

// Strict backward recovery: a saga recovered while compensating never acts
// again; one recovered while running goes on forward.
func TestRecovery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := fxsaga.NewMemory()
	// A crash left "a" compensating after step 2 (ship) failed, and "b"
	// running after step 1 (reserve) completed.
	require.NoError(t, store.Create(ctx, fxsaga.State{
		ID: "a", Name: "order", Status: fxsaga.Compensating, Step: 1, Version: 1, Error: "step Ship: lost",
		Context: []byte(`{"ID":4,"Reserved":true,"Charged":1999}`),
	}))
	require.NoError(t, store.Create(ctx, fxsaga.State{
		ID: "b", Name: "order", Status: fxsaga.Running, Step: 1, Version: 1,
		Context: []byte(`{"ID":5,"Reserved":true}`),
	}))
	w := newWorld()
	require.NoError(t, fxsaga.Recover(ctx, newRunner(t, store), orderSaga(w)))
	assert.ElementsMatch(t, []string{"undo charge", "undo reserve", "act charge", "act ship"}, w.history())
	a, _ := store.Load(ctx, "a")
	b, _ := store.Load(ctx, "b")
	assert.Equal(t, fxsaga.Compensated, a.Status, "compensated to the end, never acting")
	assert.Equal(t, fxsaga.Completed, b.Status, "resumed forward from its next step")
	unfinished, _ := store.Unfinished(ctx, "order")
	assert.Empty(t, unfinished)
}

// An owner whose saga was saved by another since cannot write: its step's
// save fails with ErrFenced and it stops driving.
func TestFencing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := fxsaga.NewMemory()
	w := newWorld()
	var r *fxsaga.Runner
	hijack := fxsaga.Define[Order]("order",
		Reserve{step{"reserve", w, func(*Order) {}}},
		stealing{store: store},
		Ship{step{"ship", w, func(*Order) {}}},
	)
	r = newRunner(t, store)
	_, err := fxsaga.Run(ctx, r, hijack, Order{ID: 6})
	require.ErrorIs(t, err, fxsaga.ErrFenced)
	assert.Equal(t, []string{"act reserve"}, w.history(), "the fenced owner stopped; ship never ran")
}

// stealing is a step during which another owner saves the saga.
type stealing struct{ store *fxsaga.Memory }

func (s stealing) Act(ctx context.Context, _ *Order) error {
	id := fxsaga.IdempotencyKey(ctx)[:36]
	st, err := s.store.Load(ctx, id)
	if err != nil {
		return err
	}
	st.Version++
	return s.store.Save(ctx, st) // another owner, taking it over
}

func (stealing) Compensate(context.Context, *Order) error { return nil }

func TestMermaid(t *testing.T) {
	t.Parallel()
	got := orderSaga(newWorld()).Mermaid()
	for _, want := range []string{
		"flowchart TD", "start([order])", "act0[Reserve]", "act1[Charge]", "act2[Ship]",
		"start --> act0", "act0 --> act1", "act1 --> act2", "act2 --> done",
		"act2 -. fails .-> comp1", "comp1 --> comp0", "comp0 --> compensated", "act0 -. fails .-> compensated",
	} {
		assert.Contains(t, got, want)
	}
}

// Stream yields each committed act and compensation, then the saga's error.
func TestStream(t *testing.T) {
	t.Parallel()
	w := newWorld()
	w.failAct["ship"] = true
	var got []string
	var last error
	for p, err := range fxsaga.Stream(context.Background(), newRunner(t, fxsaga.NewMemory()), orderSaga(w), Order{ID: 8}) {
		if err != nil {
			last = err
			continue
		}
		got = append(got, p.Action+" "+p.Step)
	}
	assert.Equal(t, []string{"act Reserve", "act Charge", "compensate Charge", "compensate Reserve"}, got)
	var sagaErr *fxsaga.Error
	require.ErrorAs(t, last, &sagaErr)
	assert.Equal(t, fxsaga.Compensated, sagaErr.Status)
}

// cancelling is a step whose compensation sees the application stop: the
// context is cancelled under it, and it fails for that.
type cancelling struct{ cancel context.CancelFunc }

func (cancelling) Act(context.Context, *Order) error { return nil }

func (s cancelling) Compensate(ctx context.Context, _ *Order) error {
	s.cancel()
	return ctx.Err()
}

// A compensation cut short by a stop leaves the saga Compensating, for
// recovery, even on its last attempt: a cancellation is not a failure.
func TestStopDuringCompensation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := fxsaga.NewMemory()
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	r := fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{CompensationAttempts: 1}, nil)
	w := newWorld()
	w.failAct["ship"] = true
	s := fxsaga.Define[Order]("stopping", cancelling{cancel}, Ship{step{"ship", w, func(*Order) {}}})
	_, err = fxsaga.Run(ctx, r, s, Order{ID: 4})
	require.ErrorIs(t, err, context.Canceled)
	left, err := store.Unfinished(context.Background(), "stopping")
	require.NoError(t, err)
	require.Len(t, left, 1)
	assert.Equal(t, fxsaga.Compensating, left[0].Status)
	assert.Empty(t, store.Failed())
}

// Cart is a context with a map, which a copy of the context shares.
type Cart struct{ Items map[string]int }

type addItem struct {
	item string
	fail bool
	seen *[]map[string]int
}

func (s addItem) Act(_ context.Context, c *Cart) error {
	c.Items[s.item]++
	if s.fail {
		return errors.New("no " + s.item)
	}
	return nil
}

func (s addItem) Compensate(_ context.Context, c *Cart) error {
	*s.seen = append(*s.seen, maps.Clone(c.Items))
	return nil
}

// A failed act's changes to the context do not reach the compensations:
// they see the context as the last step committed it.
func TestCompensationSeesCommittedContext(t *testing.T) {
	t.Parallel()
	var seen []map[string]int
	s := fxsaga.Define[Cart]("cart", addItem{item: "lamp", seen: &seen}, addItem{item: "desk", fail: true, seen: &seen})
	_, err := fxsaga.Run(context.Background(), newRunner(t, fxsaga.NewMemory()), s, Cart{Items: map[string]int{}})
	require.Error(t, err)
	assert.Equal(t, []map[string]int{{"lamp": 1}}, seen)
}

// recovering is a step during which recovery runs in the same process, as
// Module's periodic recovery can.
type recovering struct {
	r    **fxsaga.Runner
	saga **fxsaga.Saga[Order]
}

func (s recovering) Act(ctx context.Context, _ *Order) error {
	return fxsaga.Recover(context.Background(), *s.r, *s.saga)
}

func (recovering) Compensate(context.Context, *Order) error { return nil }

// Recovery does not take over a saga that a Run of the same runner is
// driving: each step acts once, and the Run is not fenced.
func TestRecoveryLeavesRunningSagas(t *testing.T) {
	t.Parallel()
	w := newWorld()
	var (
		r = newRunner(t, fxsaga.NewMemory())
		s *fxsaga.Saga[Order]
	)
	s = fxsaga.Define[Order]("order",
		Reserve{step{"reserve", w, func(o *Order) { o.Reserved = true }}},
		recovering{&r, &s},
		Ship{step{"ship", w, func(o *Order) { o.Shipment = "parcel" }}},
	)
	o, err := fxsaga.Run(context.Background(), r, s, Order{ID: 8})
	require.NoError(t, err)
	assert.Equal(t, "parcel", o.Shipment)
	assert.Equal(t, []string{"act reserve", "act ship"}, w.history())
}

// StepHandler's command is a type a user can name, and one that no Runner
// made is an error, not a panic.
func TestStepHandlerRefusesACallNoRunnerMade(t *testing.T) {
	t.Parallel()
	var h fxcqrs.CommandHandler[fxsaga.StepCall] = fxsaga.StepHandler{}
	err := h.Handle(context.Background(), fxsaga.StepCall{Activity: fxsaga.Activity{Saga: "order", Step: "Charge", Action: "act"}})
	require.ErrorContains(t, err, "fxsaga: StepHandler: a StepCall that no Runner made")
}
