package fxoutbox_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Schedules at the edges of time: past 2262-04-11 a time's nanoseconds
// overflow an int64 and wrap into the past, so such a schedule would be
// delivered at once; it is refused, naming the limit. Up to the limit,
// and before 1970, it is written.
func TestScheduleTimeLimits(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	var (
		at  time.Time
		d0  time.Duration
		err error
	)
	r := newRig(t, d, fxoutbox.Config{Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid]()}},
		fxcqrs.WithCommandHandlers(
			commandFunc[Remind](func(ctx context.Context, _ Remind) error {
				if d0 != 0 {
					_, err = fxoutbox.ScheduleAfter(ctx, d0, CancelUnpaid{})
				} else {
					_, err = fxoutbox.Schedule(ctx, at, CancelUnpaid{})
				}
				return nil
			}),
			commandFunc[CancelUnpaid](func(context.Context, CancelUnpaid) error { return nil })))
	schedule := func(when time.Time, after time.Duration) error {
		at, d0 = when, after
		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{}))
		return err
	}
	for _, when := range []time.Time{
		time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		fxoutbox.LatestSchedule.Add(time.Nanosecond),
	} {
		assert.ErrorContains(t, schedule(when, 0), "is after LatestSchedule (2262-04-11T23:47:16Z)", "%v", when)
	}
	assert.ErrorContains(t, schedule(time.Time{}, time.Duration(math.MaxInt64)), "is after LatestSchedule")
	assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled"), "none written")

	require.NoError(t, schedule(fxoutbox.LatestSchedule, 0), "the limit itself")
	assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_scheduled WHERE due_ns = 9223372036854775807"))
	require.NoError(t, schedule(time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), 0), "long past: due at once")
}

// A command registered by value and scheduled by pointer (or the other
// way round): the error says which one is registered.
func TestScheduleNamesThePointerMismatch(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	var err error
	r := newRig(t, d, fxoutbox.Config{Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid]()}},
		fxcqrs.WithCommandHandlers(commandFunc[Remind](func(ctx context.Context, _ Remind) error {
			_, err = fxoutbox.ScheduleAfter(ctx, time.Minute, &CancelUnpaid{ID: 1})
			return nil
		})))
	require.NoError(t, fxcqrs.Exec(context.Background(), r.m, Remind{}))
	assert.ErrorContains(t, err, "nothing delivers *fxoutbox_test.CancelUnpaid")
	assert.ErrorContains(t, err, "fxoutbox_test.CancelUnpaid is registered: schedule a fxoutbox_test.CancelUnpaid, or register *fxoutbox_test.CancelUnpaid")
}
