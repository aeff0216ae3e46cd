package fxsaga_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// Under fx: the sagas registered are recovered when the application
// starts, and a handler can Run one through the injected definition; the
// graph's Observer sees both.
func TestModule(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := fxsaga.NewMemory()
	require.NoError(t, store.Create(ctx, fxsaga.State{
		ID: "interrupted", Name: "order", Status: fxsaga.Running, Step: 2, Version: 1,
		Context: []byte(`{"ID":9,"Reserved":true,"Charged":1999}`),
	}))
	w := newWorld()
	rec := &recorder{}
	var (
		runner *fxsaga.Runner
		saga   *fxsaga.Saga[Order]
	)
	app := fxtest.New(t,
		fxcqrs.Module, fxsaga.Module,
		fx.Supply(fx.Annotate(store, fx.As(new(fxsaga.Store)))),
		fx.Supply(w),
		fx.Supply(fx.Annotate(rec, fx.As(new(fxcqrs.Observer)))),
		fxsaga.Register[Order](orderSaga),
		fx.Populate(&runner, &saga),
	)
	app.RequireStart()
	defer app.RequireStop()
	require.Eventually(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return slices.Contains(rec.finished, "saga order: ok") // after the saga's last save
	}, time.Minute, time.Millisecond, "recovered at start")
	st, err := store.Load(ctx, "interrupted")
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Completed, st.Status)
	assert.Equal(t, []string{"act ship"}, w.history(), "only the step it had not done")

	o, err := fxsaga.Run(ctx, runner, saga, Order{ID: 10})
	require.NoError(t, err)
	assert.Equal(t, "parcel-10", o.Shipment)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	assert.Equal(t, []string{"saga order: Ship act: ok", "saga order: ok"}, rec.finished[:2],
		"the graph's observer sees the recovered saga")
	assert.Len(t, rec.finished, 6, "and the one run: 3 acts and itself")
}

// A saga that waits for an event no Resume registers fails fx.New,
// naming the event and the option that fixes it.
func TestModuleNeedsAResumePerAwaitedEvent(t *testing.T) {
	t.Parallel()
	w := newWorld()
	app := fx.New(fx.NopLogger,
		fxcqrs.Module, fxsaga.Module,
		fx.Supply(fx.Annotate(fxsaga.NewMemory(), fx.As(new(fxsaga.Store)))),
		fxsaga.Register[Order](func() *fxsaga.Saga[Order] { return waitingSaga(w, nil) }),
	)
	require.ErrorContains(t, app.Err(), "saga paid order waits for fxsaga_test.Paid, but nothing resumes it: add fxsaga.Resume[fxsaga_test.Paid]()")
}

// Under fx, with Resume, a published event resumes the saga that Run
// left waiting.
func TestModuleResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld()
	c := newClock()
	store := fxsaga.NewMemory()
	var (
		runner *fxsaga.Runner
		saga   *fxsaga.Saga[Order]
		m      *fxcqrs.Mediator
	)
	app := fxtest.New(t,
		fxcqrs.Module, fxsaga.Module,
		fx.Supply(fx.Annotate(store, fx.As(new(fxsaga.Store)))),
		fx.Supply(fxsaga.Config{Runner: fxsaga.RunnerConfig{Now: c.Now}}),
		fxsaga.Register[Order](func() *fxsaga.Saga[Order] { return waitingSaga(w, nil) }),
		fxsaga.Resume[Paid](),
		fx.Populate(&runner, &saga, &m),
	)
	app.RequireStart()
	defer app.RequireStop()
	_, err := fxsaga.Run(ctx, runner, saga, Order{ID: 1})
	var pending *fxsaga.Pending
	require.ErrorAs(t, err, &pending)
	require.NoError(t, fxcqrs.Publish(ctx, m, Paid{OrderID: "1", Payment: "p-1"}))
	st, err := store.Load(ctx, pending.SagaID)
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Completed, st.Status)
	assert.Equal(t, []string{"act reserve", "act ship"}, w.history())
}

// The module's health checks, registered: recovery's passes.
func TestModuleRecoveryHealth(t *testing.T) {
	t.Parallel()
	var h *fxcqrs.Health
	app := fxtest.New(t,
		fxcqrs.Module, fxsaga.Module, fxcqrs.HealthModule,
		fx.Supply(fx.Annotate(fxsaga.NewMemory(), fx.As(new(fxsaga.Store)))),
		fxsaga.Register[Order](func() *fxsaga.Saga[Order] { return orderSaga(newWorld()) }),
		fx.Populate(&h),
	)
	app.RequireStart()
	defer app.RequireStop()
	require.NoError(t, h.Ready(context.Background()))
}

// Recovery must finish a pass every three intervals, by the runner's
// clock.
func TestRecoveryCheck(t *testing.T) {
	t.Parallel()
	c := newClock()
	check := fxsaga.RecoveryCheck(c.Now, time.Minute)
	require.NoError(t, check.Run(context.Background()), "not started")
	fxsaga.RecoveryBegan(check)
	c.Advance(2 * time.Minute)
	require.NoError(t, check.Run(context.Background()), "the first pass may take a while")
	c.Advance(2 * time.Minute)
	require.ErrorContains(t, check.Run(context.Background()), "saga recovery has not finished a pass for 4m0s")
	fxsaga.RecoveryPassed(check)
	require.NoError(t, check.Run(context.Background()))
	c.Advance(3*time.Minute + time.Second)
	require.Error(t, check.Run(context.Background()))
}

// SQLStore: the sagas on the outbox's database and dialect, named once,
// and the runner on the outbox's clock and its tenant stores, given once.
func TestSQLStoreModule(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	c := newClock()
	w := newWorld()
	var (
		runner *fxsaga.Runner
		store  fxsaga.Store
		outbox *fxoutbox.Outbox
	)
	app := fxtest.New(t, fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module, fxsaga.SQLStore,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Now: c.Now, After: c.After}),
		fx.Supply(fxsaga.Config{Lease: time.Minute}),
		fxsaga.Resume[Paid](),
		fxsaga.Register[Order](func() *fxsaga.Saga[Order] { return waitingSaga(w, nil).KeyBy(orderKey) }),
		fx.Populate(&runner, &store, &outbox),
	)
	app.RequireStart()
	defer app.RequireStop()
	require.IsType(t, &fxsaga.SQL{}, store)
	assert.Same(t, outbox, fxsaga.TenancyOf(runner), "the outbox's tenant stores are the runner's")
	_, err := fxsaga.Run(context.Background(), runner, waitingSaga(w, nil).KeyBy(orderKey), Order{ID: 3})
	var pending *fxsaga.Pending
	require.ErrorAs(t, err, &pending)
	assert.Equal(t, c.Now().Add(30*time.Minute), pending.Until, "the runner keeps the outbox's clock")
	found, err := store.(fxsaga.Reader).ByKey(context.Background(), "paid order", "3")
	require.NoError(t, err)
	require.Len(t, found, 1, "on the outbox's database")
}
