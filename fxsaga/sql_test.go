package fxsaga_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writing is a step that writes a row in the unit of work's transaction.
type writing struct {
	d    database
	name string
	fail bool
}

func (s writing) Act(ctx context.Context, o *Order) error {
	tx := fxoutbox.Tx(ctx)
	if tx == nil {
		return errors.New("no transaction")
	}
	if _, err := tx.ExecContext(ctx, s.d.Dialect.Rebind("INSERT INTO effects (saga_key) VALUES (?)"), fxsaga.IdempotencyKey(ctx)); err != nil {
		return err
	}
	if s.fail {
		return errors.New(s.name + " refused")
	}
	o.Charged++
	return nil
}

func (s writing) Compensate(ctx context.Context, _ *Order) error {
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.d.Dialect.Rebind("INSERT INTO effects (saga_key) VALUES (?)"), fxsaga.IdempotencyKey(ctx))
	return err
}

// sqlRunner is a runner on the SQL store of d, with an effects table for
// the steps to write in.
func sqlRunner(t testing.TB, d database) (*fxsaga.Runner, *fxsaga.SQL) {
	t.Helper()
	_, err := d.DB.Exec("CREATE TABLE effects (saga_key VARCHAR(128) NOT NULL)")
	require.NoError(t, err)
	r, store, _ := newSQLRunner(t, d, setup{config: fxsaga.RunnerConfig{CompensationBackoff: 1}})
	return r, store
}

// On each database: a step's writes and the saga's state commit together;
// a failed step's writes roll back with it, and the completed steps'
// compensations commit.
func TestSQLStore(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		r, store := sqlRunner(t, d)
		ok := fxsaga.Define[Order]("pay", writing{d: d, name: "a"}, writing{d: d, name: "b"})
		o, err := fxsaga.Run(ctx, r, ok, Order{ID: 1})
		require.NoError(t, err)
		assert.Equal(t, 2, o.Charged)
		assert.Equal(t, 2, count(t, d.DB, "SELECT COUNT(*) FROM effects"))

		bad := fxsaga.Define[Order]("pay", writing{d: d, name: "a"}, writing{d: d, name: "b", fail: true})
		_, err = fxsaga.Run(ctx, r, bad, Order{ID: 2})
		var sagaErr *fxsaga.Error
		require.ErrorAs(t, err, &sagaErr)
		assert.Equal(t, fxsaga.Compensated, sagaErr.Status)
		// a's act and compensation committed; b's act rolled back with its failure.
		assert.Equal(t, 4, count(t, d.DB, "SELECT COUNT(*) FROM effects"))
		st, err := store.Load(ctx, sagaErr.SagaID)
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Compensated, st.Status)
		assert.Equal(t, 3, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_saga_log WHERE saga_id = '"+sagaErr.SagaID+"'"),
			"act a, act b (failed), compensate a")
	})
}

// A replica that claims a saga fences the one that drove it: the old
// owner's next save fails, and its step's writes roll back with it.
func TestSQLFencing(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.PostgreSQL)
	ctx := context.Background()
	r, store := sqlRunner(t, d)
	other, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	takeover := takingOver{d: d, other: other, store: store}
	s := fxsaga.Define[Order]("fenced", writing{d: d, name: "a"}, takeover, writing{d: d, name: "c"})
	_, err = fxsaga.Run(ctx, r, s, Order{ID: 3})
	require.ErrorIs(t, err, fxsaga.ErrFenced)
	assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM effects"), "only a's write: the fenced step's rolled back, c never ran")
}

// takingOver is a step during which another replica claims the saga (its
// owner's lease expired, say).
type takingOver struct {
	d     database
	other *fxsaga.SQL
	store *fxsaga.SQL
}

func (s takingOver) Act(ctx context.Context, _ *Order) error {
	if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.d.Dialect.Rebind("INSERT INTO effects (saga_key) VALUES (?)"), fxsaga.IdempotencyKey(ctx)); err != nil {
		return err
	}
	id := fxsaga.IdempotencyKey(ctx)[:36]
	_, err := s.d.DB.ExecContext(context.Background(), s.d.Dialect.Rebind("UPDATE fxcqrs_sagas SET lease_until_ns = 0 WHERE id = ?"), id)
	if err != nil {
		return err
	}
	claimed, err := s.other.Claim(context.Background(), "fenced", 100)
	if err != nil || len(claimed) != 1 {
		return errors.Join(errors.New("the other replica did not claim the saga"), err)
	}
	return nil
}

func (takingOver) Compensate(context.Context, *Order) error { return nil }

// Charged is an event a step routes to another service.
type Charged struct{ Order int }

// emitting is a step that routes Charged, then fails when told to.
type emitting struct{ fail bool }

func (s emitting) Act(ctx context.Context, o *Order) error {
	fxcqrs.Emit(ctx, Charged{Order: o.ID})
	if s.fail {
		return errors.New("refused after emitting")
	}
	return nil
}

func (emitting) Compensate(context.Context, *Order) error { return nil }

// A step's routed events are written to the outbox in the step's
// transaction: they leave with a step that commits, and never with one
// that fails.
func TestStepEventsInOutbox(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		r, _, _ := newSQLRunner(t, d, setup{routes: []fxbus.Routing{fxbus.NewRoute[Charged]("charges")}})
		_, err := fxsaga.Run(context.Background(), r, fxsaga.Define[Order]("billing", emitting{}, emitting{fail: true}), Order{ID: 5})
		require.Error(t, err)
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"), "the first step's event; not the failed one's")
	})
}

// StartSaga is a command whose handler (wrongly) runs a saga.
type StartSaga struct{}

type startingHandler struct {
	r   **fxsaga.Runner
	got chan error
}

func (h startingHandler) Handle(ctx context.Context, _ StartSaga) error {
	_, err := fxsaga.Run(ctx, *h.r, fxsaga.Define[Order]("nested", emitting{}), Order{})
	h.got <- err
	return nil
}

// A saga run inside a unit of work's transaction would have its steps join
// it: Run refuses, with ErrInTransaction, before it writes anything.
func TestRunInsideTransaction(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	var r *fxsaga.Runner
	h := startingHandler{r: &r, got: make(chan error, 1)}
	r, _, m := newSQLRunner(t, d, setup{handlers: []any{h}})

	require.NoError(t, fxcqrs.Exec(context.Background(), m, StartSaga{}))
	require.ErrorIs(t, <-h.got, fxsaga.ErrInTransaction)
	assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_sagas"))
	_, err := fxsaga.Run(context.Background(), r, fxsaga.Define[Order]("outside", emitting{}), Order{})
	require.NoError(t, err, "outside a transaction it runs")
}

// slow is a step slower than its store's lease: it holds until the test
// has run recovery on the same runner.
type slow struct {
	in, out chan struct{}
}

func (s slow) Act(context.Context, *Order) error {
	close(s.in)
	<-s.out
	return nil
}

func (slow) Compensate(context.Context, *Order) error { return nil }

// Recovery never takes a saga from a Run of its own runner, though the
// saga's lease ran out under a slow step: the Run's next save is not
// fenced by its own process.
func TestRecoveryLeavesItsOwnRunAlone(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		r, store, _ := newSQLRunner(t, d, setup{lease: time.Nanosecond})
		step := slow{in: make(chan struct{}), out: make(chan struct{})}
		s := fxsaga.Define[Order]("slow", step, writing{d: d, name: "after"})
		_, err := d.DB.Exec("CREATE TABLE effects (saga_key VARCHAR(128) NOT NULL)")
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			_, err := fxsaga.Run(context.Background(), r, s, Order{ID: 1})
			done <- err
		}()
		<-step.in // the Run is in its first step, its lease long gone
		if d.Dialect == fxoutbox.SQLite {
			// One connection, SQLite's single writer: the recovery waits
			// for the step's transaction, so the step is let go first.
			recovered := make(chan error, 1)
			go func() { recovered <- fxsaga.Recover(context.Background(), r, s) }()
			close(step.out)
			require.NoError(t, <-recovered)
		} else {
			require.NoError(t, fxsaga.Recover(context.Background(), r, s))
			close(step.out)
		}
		require.NoError(t, <-done, "not fenced by its own recovery")
		left, err := store.Unfinished(context.Background(), "slow")
		require.NoError(t, err)
		assert.Empty(t, left)
	})
}
