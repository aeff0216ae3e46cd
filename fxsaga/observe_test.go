package fxsaga_test

import (
	"context"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type parentKey struct{}

// recorder records every call it sees, each with the activity it was
// started under.
type recorder struct {
	fxcqrs.NopObserver
	mu       sync.Mutex
	started  []string // "parent > name"
	finished []string // "name: ok" or "name: error"
}

func (r *recorder) CallStarted(ctx context.Context, p fxcqrs.CallStarted) context.Context {
	parent, _ := ctx.Value(parentKey{}).(string)
	r.mu.Lock()
	r.started = append(r.started, parent+" > "+p.Call.MessageType)
	r.mu.Unlock()
	return context.WithValue(ctx, parentKey{}, p.Call.MessageType)
}

func (r *recorder) CallFinished(_ context.Context, p fxcqrs.CallFinished) {
	outcome := "ok"
	if p.Err != nil {
		outcome = "error"
	}
	r.mu.Lock()
	r.finished = append(r.finished, p.Call.MessageType+": "+outcome)
	r.mu.Unlock()
}

// The observer sees the saga as a call and each act and compensation as a
// call under it, once each, with their outcomes: what the otel module
// makes spans and metrics of. It is the mediator's observer too, as
// under Module, and sees nothing twice.
func TestObserver(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}), fxcqrs.WithObserver(rec))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	r := fxsaga.NewRunner(m, fxsaga.NewMemory(), fxsaga.RunnerConfig{Observer: rec}, nil)
	w := newWorld()
	w.failAct["ship"] = true
	_, err = fxsaga.Run(context.Background(), r, orderSaga(w), Order{ID: 1})
	require.Error(t, err)

	assert.Equal(t, []string{
		" > saga order",
		"saga order > saga order: Reserve act",
		"saga order > saga order: Charge act",
		"saga order > saga order: Ship act",
		"saga order > saga order: Charge compensate",
		"saga order > saga order: Reserve compensate",
	}, rec.started)
	assert.Equal(t, []string{
		"saga order: Reserve act: ok",
		"saga order: Charge act: ok",
		"saga order: Ship act: error",
		"saga order: Charge compensate: ok",
		"saga order: Reserve compensate: ok",
		"saga order: error",
	}, rec.finished)
}
