package fxsaga_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// undoing is a step whose compensation fails while broken is set.
type undoing struct {
	writing
	broken *atomic.Bool
}

func (s undoing) Compensate(ctx context.Context, o *Order) error {
	if s.broken.Load() {
		return errors.New("the refund service is down")
	}
	return s.writing.Compensate(ctx, o)
}

// The repair side of the store: a failed saga retried to Compensated by
// recovery once its compensation works again; a set-aside one
// compensated from the step the operator names; another resolved by hand
// and left alone; each mark logged with who and why, and refused from a
// status it does not fit.
func TestRepairSagas(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		effectsTable(t, d)
		ctx := context.Background()
		r, store, _ := newSQLRunner(t, d, setup{config: fxsaga.RunnerConfig{CompensationAttempts: 2}})
		broken := &atomic.Bool{}
		broken.Store(true)
		s := fxsaga.Define[Order]("repaired",
			undoing{writing{d: d, name: "charge"}, broken},
			writing{d: d, name: "ship", fail: true},
		)
		_, err := fxsaga.Run(ctx, r, s, Order{ID: 1})
		var sagaErr *fxsaga.Error
		require.ErrorAs(t, err, &sagaErr)
		require.Equal(t, fxsaga.Failed, sagaErr.Status)
		id := sagaErr.SagaID
		failed, err := store.List(ctx, "repaired", fxsaga.Failed, 10)
		require.NoError(t, err)
		require.Len(t, failed, 1)
		sh, ok := fxsaga.ShapeOf(failed[0])
		require.True(t, ok, "the shape was kept")
		assert.Equal(t, []string{"undoing", "writing"}, []string{sh.Steps[0].Name, sh.Steps[1].Name})
		assert.Contains(t, sh.MermaidAt(failed[0]), "class comp0 here", "stopped compensating its first step")

		_, err = store.Retry(ctx, id, "", "")
		require.ErrorContains(t, err, "say who")
		_, err = store.CompensateFrom(ctx, id, 0, "ops", "wrong status")
		require.ErrorContains(t, err, "only a saga set aside")
		st, err := store.Retry(ctx, id, "ops@example.com", "the refund service is back")
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Compensating, st.Status)
		broken.Store(false)
		require.NoError(t, fxsaga.Recover(ctx, r, s))
		st, err = store.Load(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Compensated, st.Status, "recovery acted on the mark")
		entries, err := store.Entries(ctx, id)
		require.NoError(t, err)
		var marks []string
		for _, e := range entries {
			if e.Action == "op:retry" {
				marks = append(marks, e.Err)
			}
		}
		assert.Equal(t, []string{"ops@example.com: the refund service is back"}, marks)

		// A saga whose state no longer fits its definition: set aside by
		// recovery, then compensated from step 0 at the operator's word.
		require.NoError(t, store.Create(ctx, fxsaga.State{ID: "misfit", Name: "repaired", Status: fxsaga.Running, Step: 7, Version: 1, Context: []byte(`{"ID":2}`)}))
		_, err = d.DB.Exec("UPDATE fxcqrs_sagas SET lease_until_ns = 0 WHERE id = 'misfit'") // its owner crashed
		require.NoError(t, err)
		_ = fxsaga.Recover(ctx, r, s)
		st, err = store.Load(ctx, "misfit")
		require.NoError(t, err)
		require.Equal(t, fxsaga.SetAside, st.Status)
		_, err = store.CompensateFrom(ctx, "misfit", 0, "ops", "only the charge had acted")
		require.NoError(t, err)
		require.NoError(t, fxsaga.Recover(ctx, r, s))
		st, _ = store.Load(ctx, "misfit")
		assert.Equal(t, fxsaga.Compensated, st.Status)

		// Resolved by hand: final, and recovery leaves it.
		broken.Store(true)
		_, err = fxsaga.Run(ctx, r, s, Order{ID: 3})
		require.ErrorAs(t, err, &sagaErr)
		st, err = store.Resolve(ctx, sagaErr.SagaID, "ops", "refunded by hand")
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Resolved, st.Status)
		require.NoError(t, fxsaga.Recover(ctx, r, s))
		st, _ = store.Load(ctx, sagaErr.SagaID)
		assert.Equal(t, fxsaga.Resolved, st.Status)
		assert.Contains(t, st.Error, "resolved by ops: refunded by hand")
		_, err = store.Resolve(ctx, sagaErr.SagaID, "ops", "twice")
		require.ErrorContains(t, err, "only a failed or set-aside saga")
	})
}
