package fxsaga_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// A 3-step saga on PostgreSQL, each step inserting one row: through the
// runner (each step a mediator call in the unit of work's transaction, the
// saga's state saved in it, a log entry after it), against the same three
// inserts called directly in one transaction each. The ratio is the cost
// of durability.
//
//	go test -run '^$' -bench Saga -benchmem
func BenchmarkSaga(b *testing.B) {
	d := openDatabase(b, fxoutbox.PostgreSQL)
	ctx := context.Background()
	r, _ := sqlRunner(b, d)
	insert := d.Dialect.Rebind("INSERT INTO effects (saga_key) VALUES (?)")
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			for step := range 3 {
				tx, err := d.DB.BeginTx(ctx, nil)
				require.NoError(b, err)
				_, err = tx.ExecContext(ctx, insert, fmt.Sprint(i, "/", step))
				require.NoError(b, err)
				require.NoError(b, tx.Commit())
			}
		}
	})
	s := fxsaga.Define[Order]("bench", writing{d: d, name: "a"}, writing{d: d, name: "b"}, writing{d: d, name: "c"})
	b.Run("fxsaga", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			_, err := fxsaga.Run(ctx, r, s, Order{ID: i})
			require.NoError(b, err)
		}
	})
}

// Recovery of 1,000 interrupted sagas, each stopped after its first step
// (two steps left to act), by one replica. One op is the 1,000.
func BenchmarkRecovery(b *testing.B) {
	d := openDatabase(b, fxoutbox.PostgreSQL)
	ctx := context.Background()
	r, store := sqlRunner(b, d)
	s := fxsaga.Define[Order]("recovery", writing{d: d, name: "a"}, writing{d: d, name: "b"}, writing{d: d, name: "c"})
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		for i := range 1000 {
			require.NoError(b, store.Create(ctx, fxsaga.State{
				ID: uuid.NewString(), Name: "recovery", Status: fxsaga.Running, Step: 1, Version: 1,
				Context: fmt.Appendf(nil, `{"ID":%d}`, i),
			}))
		}
		// Unowned: as after the crash of their replica, its lease expired.
		_, err := d.DB.Exec("UPDATE fxcqrs_sagas SET lease_until_ns = 0")
		require.NoError(b, err)
		b.StartTimer()
		require.NoError(b, fxsaga.Recover(ctx, r, s))
	}
	b.StopTimer()
	require.Zero(b, count(b, d.DB, "SELECT COUNT(*) FROM fxcqrs_sagas WHERE status <> 'COMPLETED'"))
}
