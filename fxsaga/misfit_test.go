package fxsaga_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// misfits are stored states that a deployment which removed a step (the
// order saga once had more than its three) leaves behind, and a context
// written by hand.
var misfits = []fxsaga.State{
	{ID: "running-past-the-end", Name: "order", Status: fxsaga.Running, Step: 5, Version: 1, Context: []byte(`{"ID":1}`)},
	{ID: "compensating-past-the-end", Name: "order", Status: fxsaga.Compensating, Step: 5, Version: 1, Context: []byte(`{"ID":2}`), Error: "step x: refused"},
	{ID: "running-negative", Name: "order", Status: fxsaga.Running, Step: -1, Version: 1, Context: []byte(`{"ID":3}`)},
	{ID: "corrupt-context", Name: "order", Status: fxsaga.Running, Step: 1, Version: 1, Context: []byte(`{"ID":`)},
}

// A saga whose stored state does not fit its definition is set aside,
// logged at error level and listed with the failed ones; recovery goes
// on with the others and never panics.
func TestMisfitSagasAreSetAside(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := fxsaga.NewMemory()
	for _, st := range misfits {
		require.NoError(t, store.Create(ctx, st))
	}
	require.NoError(t, store.Create(ctx, fxsaga.State{
		ID: "zz-fits", Name: "order", Status: fxsaga.Running, Step: 2, Version: 1,
		Context: []byte(`{"ID":9,"Reserved":true,"Charged":1999}`),
	}))
	core, logs := observer.New(zapcore.ErrorLevel)
	w := newWorld()
	r := newLoggedRunner(t, store, zap.New(core))

	err := fxsaga.Recover(ctx, r, orderSaga(w))
	require.Error(t, err, "set-aside sagas are reported")
	var sagaErr *fxsaga.Error
	require.ErrorAs(t, err, &sagaErr)
	assert.Equal(t, fxsaga.SetAside, sagaErr.Status)

	st, err := store.Load(ctx, "zz-fits")
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Completed, st.Status, "the saga that fits was recovered")
	assert.Equal(t, []string{"act ship"}, w.history())

	var aside []string
	for _, st := range store.Failed() {
		aside = append(aside, st.ID)
		assert.Equal(t, fxsaga.SetAside, st.Status, st.ID)
		assert.NotEmpty(t, st.Error, st.ID)
	}
	assert.ElementsMatch(t, []string{"running-past-the-end", "compensating-past-the-end", "running-negative", "corrupt-context"}, aside)
	assert.Equal(t, 4, logs.FilterMessageSnippet("set aside").Len())

	require.NoError(t, fxsaga.Recover(ctx, r, orderSaga(w)), "set aside is final: recovery leaves them")
	assert.Equal(t, 4, logs.FilterMessageSnippet("set aside").Len(), "and does not log them again")
}

// Under Module, recovery runs on a goroutine of its own: a misfit must
// not take the process down, at start or at any restart.
func TestModuleSetsMisfitsAsideAndStaysUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := fxsaga.NewMemory()
	for _, st := range misfits {
		require.NoError(t, store.Create(ctx, st))
	}
	setAside := make(chan struct{}, len(misfits))
	core, _ := observer.New(zapcore.ErrorLevel)
	log := zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if strings.Contains(e.Message, "set aside") {
			setAside <- struct{}{}
		}
		return nil
	}))
	app := fxtest.New(t,
		fxcqrs.Module, fxsaga.Module,
		fx.Supply(log, fx.Annotate(store, fx.As(new(fxsaga.Store))), newWorld()),
		fxsaga.Register[Order](orderSaga),
	)
	app.RequireStart()
	for range misfits {
		<-setAside
	}
	app.RequireStop()
	assert.Len(t, store.Failed(), len(misfits))
}

// A saga without steps, or with a nil one, is refused with an error that
// says why: by Run, Stream and Recover, and by fx.New under Register.
func TestEmptySagaIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRunner(t, fxsaga.NewMemory())
	empty := fxsaga.Define[Order]("empty")
	_, err := fxsaga.Run(ctx, r, empty, Order{})
	require.ErrorContains(t, err, `fxsaga.Define("empty"): a saga needs at least one step`)
	require.ErrorContains(t, fxsaga.Recover(ctx, r, empty), "at least one step")
	for _, err := range fxsaga.Stream(ctx, r, empty, Order{}) {
		require.ErrorContains(t, err, "at least one step")
	}
	_, err = fxsaga.Run(ctx, r, fxsaga.Define[Order]("holey", Reserve{}, nil), Order{})
	require.ErrorContains(t, err, `fxsaga.Define("holey"): step 2 is nil`)

	app := fx.New(fx.NopLogger,
		fxcqrs.Module, fxsaga.Module,
		fx.Supply(fx.Annotate(fxsaga.NewMemory(), fx.As(new(fxsaga.Store)))),
		fxsaga.Register[Order](func() *fxsaga.Saga[Order] { return fxsaga.Define[Order]("empty") }),
	)
	require.ErrorContains(t, app.Err(), "at least one step")
}

type holdStep struct{ acted *int }

func (s holdStep) Act(context.Context, *HolderCtx) error { *s.acted++; return nil }

func (holdStep) Compensate(context.Context, *HolderCtx) error { return nil }

// HolderCtx is a saga context whose field holds an error value: JSON
// writes it as {} and cannot read it back into the interface.
type HolderCtx struct{ Err error }

// Run refuses, before the first step, a context that does not read back
// from its encoding.
func TestContextThatDoesNotRoundTripIsRefused(t *testing.T) {
	t.Parallel()
	acted := 0
	r := newRunner(t, fxsaga.NewMemory())
	s := fxsaga.Define[HolderCtx]("holding", holdStep{&acted})
	_, err := fxsaga.Run(context.Background(), r, s, HolderCtx{Err: errors.New("boom")})
	require.ErrorContains(t, err, "does not read back")
	assert.Zero(t, acted, "no step acted")
	_, err = fxsaga.Run(context.Background(), r, s, HolderCtx{})
	require.NoError(t, err, "a nil interface reads back")
	assert.Equal(t, 1, acted)
}

type Pay struct{ step }

type namedPay struct {
	step
	n string
}

func (p namedPay) Name() string { return p.n }

// Generated step names never collide with given ones.
func TestStepNamesAreUnique(t *testing.T) {
	t.Parallel()
	w := newWorld()
	s := fxsaga.Define[Order]("pay", Pay{step{"a", w, func(*Order) {}}}, Pay{step{"b", w, func(*Order) {}}}, namedPay{step{"c", w, func(*Order) {}}, "Pay (2)"})
	mermaid := s.Mermaid()
	names := map[string]bool{}
	for _, line := range strings.Split(mermaid, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "act") && strings.Contains(line, "[") {
			name := line[strings.Index(line, "[")+1 : strings.LastIndex(line, "]")]
			assert.False(t, names[name], "two steps named %q:\n%s", name, mermaid)
			names[name] = true
		}
	}
	assert.Len(t, names, 3)
}
