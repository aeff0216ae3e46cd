package fxoutbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Cancel at the moment its schedule falls due, on each database: the
// relay moves the due schedules while commands cancel them. No command
// fails for it (on MariaDB a cancel once met the move in a deadlock and
// its whole transaction was rolled back); each schedule is either
// cancelled, and never runs, or was already on its way, and runs once.
func TestCancelRacesTheDueMove(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		const n = 150
		clock := newFakeClock()
		var (
			mu  sync.Mutex
			ids = map[int]string{}
			ran = map[int]int{}
		)
		r := newRig(t, d, fxoutbox.Config{Now: clock.Now, After: clock.After, Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid]()}},
			fxcqrs.WithCommandHandlers(
				commandFunc[Remind](func(ctx context.Context, c Remind) error {
					id, err := fxoutbox.ScheduleAfter(ctx, c.Delay, CancelUnpaid{ID: c.ID})
					mu.Lock()
					ids[c.ID] = id
					mu.Unlock()
					return err
				}),
				commandFunc[CancelOne](func(ctx context.Context, c CancelOne) error {
					ok, err := fxoutbox.Cancel(ctx, c.MessageID)
					*c.Cancelled = ok
					return err
				}),
				commandFunc[CancelUnpaid](func(_ context.Context, c CancelUnpaid) error {
					mu.Lock()
					ran[c.ID]++
					mu.Unlock()
					return nil
				}),
			))
		ctx := context.Background()
		for i := range n {
			require.NoError(t, fxcqrs.Exec(ctx, r.m, Remind{ID: i, Delay: time.Minute}))
		}
		clock.Advance(time.Minute) // all due: the relay moves them as the cancels come
		cancelled := make([]bool, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		work := make(chan int)
		for range 8 {
			wg.Go(func() {
				for i := range work {
					mu.Lock()
					id := ids[i]
					mu.Unlock()
					errs[i] = fxcqrs.Exec(ctx, r.m, CancelOne{MessageID: id, Cancelled: &cancelled[i]})
				}
			})
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()
		for i, err := range errs {
			assert.NoError(t, err, "cancel %d", i)
		}
		waitFor(t, func() bool {
			return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled") == 0 && count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0
		})
		mu.Lock()
		defer mu.Unlock()
		c := 0
		for i := range n {
			if cancelled[i] {
				c++
				assert.Zero(t, ran[i], "%d was cancelled, and ran", i)
			} else {
				assert.Equal(t, 1, ran[i], "%d was on its way: it runs once", i)
			}
		}
		t.Logf("%d of %d cancelled in time", c, n)
	})
}

// CancelOne cancels the schedule MessageID and says whether it was waiting.
type CancelOne struct {
	MessageID string
	Cancelled *bool
}

// On MySQL a Cancel does not wait for a move of due schedules that holds
// the schedule's row (the move's INSERT … SELECT holds it shared, as a
// share lock does here): it answers false at once, the schedule being on
// its way. Waiting queued its lock between the move's shared lock and
// the exclusive one its DELETE asks for next, and MariaDB broke the
// deadlock by rolling back the cancel's whole transaction.
func TestCancelDoesNotWaitForTheMove(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.MySQL)
	clock := newFakeClock()
	var id string
	r := newRig(t, d, fxoutbox.Config{Now: clock.Now, After: clock.After, Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid]()}},
		fxcqrs.WithCommandHandlers(
			commandFunc[Remind](func(ctx context.Context, c Remind) (err error) {
				id, err = fxoutbox.ScheduleAfter(ctx, c.Delay, CancelUnpaid{ID: c.ID})
				return err
			}),
			commandFunc[CancelOne](func(ctx context.Context, c CancelOne) error {
				ok, err := fxoutbox.Cancel(ctx, c.MessageID)
				*c.Cancelled = ok
				return err
			}),
			commandFunc[CancelUnpaid](func(context.Context, CancelUnpaid) error { return nil }),
		))
	ctx := context.Background()
	require.NoError(t, fxcqrs.Exec(ctx, r.m, Remind{ID: 1, Delay: time.Hour}))

	move, err := d.DB.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = move.Rollback() }()
	_, err = move.ExecContext(ctx, "SELECT id FROM fxcqrs_outbox_scheduled WHERE message_id = ? LOCK IN SHARE MODE", id)
	require.NoError(t, err)

	// A lock wait would run to the deadline (or to innodb_lock_wait_timeout).
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cancelled := true
	require.NoError(t, fxcqrs.Exec(wait, r.m, CancelOne{MessageID: id, Cancelled: &cancelled}), "the cancel waited for the move")
	assert.False(t, cancelled, "held by the move: on its way")
	require.NoError(t, move.Rollback())
	assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"), "not cancelled: the move takes it")
}
