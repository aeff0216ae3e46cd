package fxcqrstest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxcqrstest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type Trip struct{ Booked []string }

// booking is a step that books name and cancels it.
type booking struct{ name string }

func (b booking) Name() string { return b.name }

func (b booking) Act(_ context.Context, t *Trip) error {
	t.Booked = append(t.Booked, b.name)
	return nil
}

func (b booking) Compensate(context.Context, *Trip) error { return nil }

// eachStore runs test on a Memory store and on SQLite through the unit of
// work.
func eachStore(t *testing.T, test func(t *testing.T, s func() *fxcqrstest.Sagas)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		test(t, func() *fxcqrstest.Sagas { return fxcqrstest.NewSagas(t) })
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		test(t, func() *fxcqrstest.Sagas {
			d := outboxtest.Open(t, fxoutbox.SQLite)
			require.NoError(t, fxsaga.Migrate(context.Background(), d.DB, d.Dialect, fxsaga.Tables{}))
			return fxcqrstest.NewSagas(t, fxcqrstest.SagasOn(d.DB, d.Dialect))
		})
	})
}

// A crash after a step committed: the new runner goes on from the next
// step, and nothing acts twice.
func TestSagaCrashAfterAct(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newSagas func() *fxcqrstest.Sagas) {
		s := newSagas()
		trip := fxsaga.Define[Trip]("trip", booking{"flight"}, fxcqrstest.Faulty(s, fxsaga.Step[Trip](booking{"hotel"}), fxcqrstest.Faults{CrashAfterAct: true}), booking{"car"})
		ctx := context.Background()
		id, err := fxcqrstest.Run(ctx, s, trip, Trip{})
		require.ErrorIs(t, err, fxcqrstest.ErrCrashed)
		require.NotEmpty(t, id)
		assert.Equal(t, []string{"act 0", "act 1"}, s.Log(id))
		assert.Equal(t, fxsaga.Running, s.State(id).Status)
		require.NoError(t, fxcqrstest.Recover(ctx, s, trip))
		assert.Equal(t, []string{"act 0", "act 1", "act 2"}, s.Log(id))
		assert.Equal(t, fxsaga.Completed, s.State(id).Status)
		assert.JSONEq(t, `{"Booked":["flight","hotel","car"]}`, string(s.State(id).Context))
	})
}

// A crash as an act begins: its transaction never committed, so recovery
// acts it again; a crash as a compensation begins: recovery compensates
// on, never acting again.
func TestSagaCrashBefore(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newSagas func() *fxcqrstest.Sagas) {
		s := newSagas()
		ctx := context.Background()
		trip := fxsaga.Define[Trip]("trip", booking{"flight"}, fxcqrstest.Faulty(s, fxsaga.Step[Trip](booking{"hotel"}), fxcqrstest.Faults{CrashBeforeAct: true}))
		id, err := fxcqrstest.Run(ctx, s, trip, Trip{})
		require.ErrorIs(t, err, fxcqrstest.ErrCrashed)
		assert.Equal(t, []string{"act 0"}, s.Log(id), "a crash logs nothing")
		require.NoError(t, fxcqrstest.Recover(ctx, s, trip))
		assert.Equal(t, []string{"act 0", "act 1"}, s.Log(id))

		s = newSagas()
		trip = fxsaga.Define[Trip]("trip",
			fxcqrstest.Faulty(s, fxsaga.Step[Trip](booking{"flight"}), fxcqrstest.Faults{CrashBeforeCompensate: true}),
			fxcqrstest.Faulty(s, fxsaga.Step[Trip](booking{"hotel"}), fxcqrstest.Faults{FailAct: -1}))
		id, err = fxcqrstest.Run(ctx, s, trip, Trip{})
		require.ErrorIs(t, err, fxcqrstest.ErrCrashed)
		assert.Equal(t, fxsaga.Compensating, s.State(id).Status)
		err = fxcqrstest.Recover(ctx, s, trip)
		require.NoError(t, err, "a compensated saga is recovery's success")
		assert.Equal(t, []string{"act 0", "act 1: act refused (a fault injected)", "compensate 0"}, s.Log(id))
		assert.Equal(t, fxsaga.Compensated, s.State(id).Status)
	})
}

// A compensation that fails twice is retried and works the third time;
// one that always fails leaves the saga Failed.
func TestSagaCompensationFaults(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, newSagas func() *fxcqrstest.Sagas) {
		s := newSagas()
		ctx := context.Background()
		trip := fxsaga.Define[Trip]("trip",
			fxcqrstest.Faulty(s, fxsaga.Step[Trip](booking{"flight"}), fxcqrstest.Faults{FailCompensate: 2}),
			fxcqrstest.Faulty(s, fxsaga.Step[Trip](booking{"hotel"}), fxcqrstest.Faults{FailAct: 1}))
		id, err := fxcqrstest.Run(ctx, s, trip, Trip{})
		var sagaErr *fxsaga.Error
		require.True(t, errors.As(err, &sagaErr), "%v", err)
		assert.Equal(t, fxsaga.Compensated, sagaErr.Status)
		assert.Equal(t, []string{
			"act 0", "act 1: act refused (a fault injected)",
			"compensate 0: compensation refused (a fault injected)", "compensate 0: compensation refused (a fault injected)", "compensate 0",
		}, s.Log(id))
	})
}

type (
	Booking struct {
		ID      string
		Booked  []string
		Payment string
	}
	Paid struct{ Booking, Payment string }
)

// hotelStep books name on a Booking.
type hotelStep struct{ name string }

func (h hotelStep) Name() string { return h.name }

func (h hotelStep) Act(_ context.Context, b *Booking) error {
	b.Booked = append(b.Booked, h.name)
	return nil
}

func (hotelStep) Compensate(context.Context, *Booking) error { return nil }

// paidBooking holds a room, waits a day for its payment, then confirms.
func paidBooking() *fxsaga.Saga[Booking] {
	step := func(name string) fxsaga.Step[Booking] { return hotelStep{name} }
	return fxsaga.Define[Booking]("paid booking",
		step("hold"),
		fxsaga.Await(fxsaga.Wait[Booking, Paid]{
			Name:   "payment",
			Key:    func(b *Booking) string { return b.ID },
			Match:  func(p Paid) string { return p.Booking },
			Within: 24 * time.Hour,
			Then:   func(_ context.Context, b *Booking, p Paid) error { b.Payment = p.Payment; return nil },
		}),
		step("confirm"),
	)
}

// A saga that waits, on each store: it waits (on SQL its deadline is
// scheduled in the step's transaction), a delivered event resumes it to
// its end; another one, never paid, times out when the clock passes its
// deadline and Recover runs.
func TestSagaThatWaits(t *testing.T) {
	eachStore(t, func(t *testing.T, newSagas func() *fxcqrstest.Sagas) {
		ctx := context.Background()
		s := newSagas()
		def := paidBooking()

		id, err := fxcqrstest.Run(ctx, s, def, Booking{ID: "b-1"})
		var pending *fxsaga.Pending
		require.ErrorAs(t, err, &pending)
		assert.Equal(t, "b-1", pending.Key)
		assert.Equal(t, fxsaga.Waiting, s.State(id).Status)

		require.NoError(t, fxcqrstest.Deliver(ctx, s, def, Paid{Booking: "b-1", Payment: "p-9"}))
		assert.Equal(t, fxsaga.Completed, s.State(id).Status)
		assert.Equal(t, []string{"act 0", "act 1", "act 2"}, actions(s.Log(id)))
		require.NoError(t, fxcqrstest.Deliver(ctx, s, def, Paid{Booking: "b-1", Payment: "again"}), "late: ignored")

		unpaid, err := fxcqrstest.Run(ctx, s, def, Booking{ID: "b-2"})
		require.ErrorAs(t, err, &pending)
		s.Clock.Advance(25 * time.Hour)
		require.NoError(t, fxcqrstest.Recover(ctx, s, def))
		assert.Equal(t, fxsaga.Compensated, s.State(unpaid).Status)
	})
}

// actions keeps the log's acts, in order.
func actions(log []string) []string {
	var out []string
	for _, l := range log {
		if len(l) > 3 && l[:3] == "act" {
			out = append(out, l)
		}
	}
	return out
}
