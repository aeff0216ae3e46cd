package fxoutbox_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type (
	// Step writes a row, then, after its commit, runs Next.
	Step struct {
		ID   int
		Fail bool
	}
	// Next writes a row in a unit of work of its own.
	Next struct{ ID int }
	// Place emits Placed, a durable event, whose handler runs Step.
	Place  struct{ ID int }
	Placed struct{ ID int }
)

// AfterCommit's work runs once the unit of work committed, never when it
// rolled back, outside it: a command it runs is a unit of work of its own
// (committed on its own), and the inbox of the message being delivered
// does not take a second command of one handler for a redelivery.
func TestAfterCommit(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		_, err := d.DB.Exec("CREATE TABLE steps (id INTEGER NOT NULL, what VARCHAR(16) NOT NULL)")
		require.NoError(t, err)
		insert := func(ctx context.Context, id int, what string) error {
			_, err := fxoutbox.Tx(ctx).ExecContext(ctx, d.Dialect.Rebind("INSERT INTO steps (id, what) VALUES (?, ?)"), id, what)
			return err
		}
		var seen atomic.Int32
		var r *rig
		r = newRig(t, d, fxoutbox.Config{Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Placed]()}},
			fxcqrs.WithCommandHandlers(
				commandFunc[Step](func(ctx context.Context, c Step) error {
					if err := insert(ctx, c.ID, "step"); err != nil {
						return err
					}
					require.NoError(t, fxoutbox.AfterCommit(ctx, func(ctx context.Context) {
						seen.Add(1)
						assert.Nil(t, fxoutbox.Tx(ctx), "outside the unit of work")
						assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM steps WHERE what = 'step'"), "committed before")
						assert.NoError(t, fxcqrs.Exec(ctx, r.m, Next{ID: c.ID}))
						assert.NoError(t, fxcqrs.Exec(ctx, r.m, Next{ID: c.ID + 100}))
					}))
					if c.Fail {
						return errors.New("refused")
					}
					return nil
				}),
				commandFunc[Next](func(ctx context.Context, c Next) error { return insert(ctx, c.ID, "next") }),
				commandFunc[Place](func(ctx context.Context, c Place) error {
					fxcqrs.Emit(ctx, Placed(c))
					return nil
				})),
			fxcqrs.WithEventHandlers(eventFunc[Placed](func(ctx context.Context, e Placed) error {
				return fxcqrs.Exec(ctx, r.m, Step{ID: e.ID})
			})))

		require.ErrorContains(t, fxcqrs.Exec(ctx, r.m, Step{ID: 1, Fail: true}), "refused")
		assert.Zero(t, seen.Load(), "a rollback runs nothing")
		assert.Equal(t, 0, count(t, d.DB, "SELECT COUNT(*) FROM steps"))

		// A durable event, delivered from its row with the inbox, whose
		// handler's command runs Next twice after the commit: neither is
		// taken for a second handling of the row's message.
		require.NoError(t, fxcqrs.Exec(ctx, r.m, Place{ID: 2}))
		require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 }, time.Minute, time.Millisecond)
		assert.Equal(t, int32(1), seen.Load())
		assert.Equal(t, 2, count(t, d.DB, "SELECT COUNT(*) FROM steps WHERE what = 'next'"))
	})
	require.ErrorIs(t, fxoutbox.AfterCommit(context.Background(), func(context.Context) {}), fxoutbox.ErrNoUnitOfWork)
}
