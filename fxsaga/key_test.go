package fxsaga_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

func orderKey(o *Order) string { return strconv.Itoa(o.ID) }

// keyedRig is a runner, its store and how to deliver a Paid to it.
type keyedRig struct {
	r     *fxsaga.Runner
	store interface {
		fxsaga.Reader
	}
	pay func(t *testing.T, p Paid)
	def *fxsaga.Saga[Order]
}

// eachKeyedStore runs test on the Memory store and on each database.
func eachKeyedStore(t *testing.T, test func(t *testing.T, k keyedRig)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		r, m, store := waitRig(t, newClock())
		test(t, keyedRig{r: r, store: store, def: waitingSaga(newWorld(), nil).KeyBy(orderKey), pay: func(t *testing.T, p Paid) {
			require.NoError(t, fxcqrs.Publish(context.Background(), m, p))
		}})
	})
	forEachDatabase(t, func(t *testing.T, d database) {
		effectsTable(t, d)
		rig := newSQLWait(t, d, newClock(), false)
		test(t, keyedRig{r: rig.r, store: rig.store, def: paidSaga(d).KeyBy(orderKey), pay: func(t *testing.T, p Paid) {
			require.NoError(t, fxcqrs.Publish(inbound(context.Background(), rig.bus, uuid.NewString()), rig.m, p))
		}})
	})
}

// A saga is found by its business key, and a definition has one
// unfinished saga per key: a second start is refused, naming the first;
// once the first is done, the key is free.
func TestBusinessKey(t *testing.T) {
	t.Parallel()
	eachKeyedStore(t, func(t *testing.T, k keyedRig) {
		ctx := context.Background()
		_, err := fxsaga.Run(ctx, k.r, k.def, Order{ID: 7})
		var pending *fxsaga.Pending
		require.ErrorAs(t, err, &pending)
		first := pending.SagaID

		_, err = fxsaga.Run(ctx, k.r, k.def, Order{ID: 7})
		var started *fxsaga.AlreadyStarted
		require.ErrorAs(t, err, &started, "a second saga of order 7 while the first waits")
		assert.Equal(t, fxsaga.AlreadyStarted{Saga: "paid order", Key: "7", SagaID: first}, *started)
		_, err = fxsaga.Run(ctx, k.r, k.def, Order{ID: 8})
		require.ErrorAs(t, err, &pending, "another order's saga starts")

		found, err := k.store.ByKey(ctx, "paid order", "7")
		require.NoError(t, err)
		require.Len(t, found, 1, "the refused start left nothing")
		assert.Equal(t, first, found[0].ID)
		assert.Equal(t, "7", found[0].BusinessKey)
		anyName, err := k.store.ByKey(ctx, "", "7")
		require.NoError(t, err)
		assert.Len(t, anyName, 1)

		k.pay(t, Paid{OrderID: "7", Payment: "p-7"})
		st, err := k.store.Load(ctx, first)
		require.NoError(t, err)
		require.Equal(t, fxsaga.Completed, st.Status)
		_, err = fxsaga.Run(ctx, k.r, k.def, Order{ID: 7})
		require.ErrorAs(t, err, &pending, "the first completed: the key is free")
		found, err = k.store.ByKey(ctx, "paid order", "7")
		require.NoError(t, err)
		require.Len(t, found, 2)
		assert.Equal(t, pending.SagaID, found[0].ID, "the unfinished one first")
		assert.Equal(t, first, found[1].ID)

		_, err = fxsaga.Run(ctx, k.r, k.def, Order{ID: 1})
		require.ErrorAs(t, err, &pending)
		long := fxsaga.Define[Order]("long key", awaitPayment(nil)).KeyBy(func(*Order) string { return strings.Repeat("k", fxsaga.MaxKey+1) })
		_, err = fxsaga.Run(ctx, k.r, long, Order{ID: 2})
		assert.ErrorContains(t, err, "more than MaxKey")
	})
}

// Many starts of one key at once, on each database: exactly one saga
// starts; the others are told which.
func TestBusinessKeyRace(t *testing.T) {
	t.Parallel()
	eachKeyedStore(t, func(t *testing.T, k keyedRig) {
		ctx := context.Background()
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			started []string
			refused []string
		)
		for range 8 {
			wg.Go(func() {
				_, err := fxsaga.Run(ctx, k.r, k.def, Order{ID: 9})
				var pending *fxsaga.Pending
				var dup *fxsaga.AlreadyStarted
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.As(err, &pending):
					started = append(started, pending.SagaID)
				case errors.As(err, &dup):
					refused = append(refused, dup.SagaID)
				default:
					t.Errorf("neither started nor refused: %v", err)
				}
			})
		}
		wg.Wait()
		require.Len(t, started, 1)
		assert.Len(t, refused, 7)
		for _, id := range refused {
			assert.Equal(t, started[0], id)
		}
	})
}

// A nil key function is the definition's error: Run refuses it, and
// Register fails the application's start.
func TestBusinessKeyNil(t *testing.T) {
	t.Parallel()
	def := fxsaga.Define[Order]("nil key", awaitPayment(nil)).KeyBy(nil)
	r, _, _ := waitRig(t, newClock())
	_, err := fxsaga.Run(context.Background(), r, def, Order{ID: 1})
	assert.ErrorContains(t, err, "a nil key function")
	app := fx.New(fx.NopLogger, fxcqrs.Module, fxsaga.Module,
		fx.Supply(fx.Annotate(fxsaga.NewMemory(), fx.As(new(fxsaga.Store)))),
		fxsaga.Resume[Paid](),
		fxsaga.Register[Order](func() *fxsaga.Saga[Order] { return def }))
	err = app.Err()
	if err == nil {
		err = app.Start(context.Background())
	}
	assert.ErrorContains(t, err, "a nil key function")
}

// A failed saga frees its key; a newer saga takes it; a retry of the
// failed one is then refused with the newer one's id, not a constraint
// error of the database's.
func TestRetryOfAFailedSagaWhoseKeyIsTaken(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		require.NoError(t, store.Create(ctx, fxsaga.State{ID: "old", Name: "booking", Status: fxsaga.Failed, Version: 3, Context: []byte(`{}`), BusinessKey: "b-1"}))
		require.NoError(t, store.Create(ctx, fxsaga.State{ID: "new", Name: "booking", Status: fxsaga.Running, Version: 1, Context: []byte(`{}`), BusinessKey: "b-1"}))
		_, err = store.Retry(ctx, "old", "ops", "try again")
		var started *fxsaga.AlreadyStarted
		require.ErrorAs(t, err, &started)
		assert.Equal(t, "new", started.SagaID)
		st, err := store.Load(ctx, "old")
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Failed, st.Status, "unchanged")

		// Keys compare byte for byte on every database.
		require.NoError(t, store.Create(ctx, fxsaga.State{ID: "upper", Name: "booking", Status: fxsaga.Running, Version: 1, Context: []byte(`{}`), BusinessKey: "B-1"}))
		require.NoError(t, store.Create(ctx, fxsaga.State{ID: "spaced", Name: "booking", Status: fxsaga.Running, Version: 1, Context: []byte(`{}`), BusinessKey: "b-1 "}))
		found, err := store.ByKey(ctx, "booking", "b-1")
		require.NoError(t, err)
		ids := []string{}
		for _, s := range found {
			ids = append(ids, s.ID)
		}
		assert.Equal(t, []string{"new", "old"}, ids)
	})
}
