package fxsaga_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// Trip is the example saga's context.
type Trip struct {
	Flight, Hotel string
}

type BookFlight struct{}

func (BookFlight) Act(_ context.Context, t *Trip) error {
	t.Flight = "LH 123"
	fmt.Println("flight booked")
	return nil
}

func (BookFlight) Compensate(_ context.Context, t *Trip) error {
	fmt.Println("flight", t.Flight, "cancelled")
	return nil
}

type BookHotel struct{}

func (BookHotel) Act(context.Context, *Trip) error { return errors.New("no room") }

func (BookHotel) Compensate(context.Context, *Trip) error { return nil }

// A saga whose second step fails: the first is compensated, and the error
// says what happened.
func ExampleRun() {
	m, _ := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}))
	defer m.Stop(context.Background()) //nolint:errcheck // an example
	runner := fxsaga.NewRunner(m, fxsaga.NewMemory(), fxsaga.RunnerConfig{}, nil)
	trip := fxsaga.Define[Trip]("trip", BookFlight{}, BookHotel{})

	_, err := fxsaga.Run(context.Background(), runner, trip, Trip{})
	var sagaErr *fxsaga.Error
	if errors.As(err, &sagaErr) {
		fmt.Println(sagaErr.Step, "failed:", sagaErr.Err, "->", sagaErr.Status)
	}
	// Output:
	// flight booked
	// flight LH 123 cancelled
	// BookHotel failed: no room -> COMPENSATED
}

// Approved is what a person's approval publishes.
type Approved struct{ Trip string }

// A saga that waits: it books the flight, then waits for the trip's
// approval (a person's, another service's), holding nothing meanwhile;
// the approval resumes it, and it books the hotel.
func ExampleAwait() {
	resume := fxsaga.NewResumer[Approved]()
	m, _ := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}, fxsaga.NewDeadlineHandler()),
		fxcqrs.WithEventHandlers(resume))
	defer m.Stop(context.Background()) //nolint:errcheck // an example
	store := fxsaga.NewMemory()
	runner := fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{}, nil)
	resume.Bind(runner)
	trip := fxsaga.Define[Trip]("trip",
		BookFlight{},
		fxsaga.Await(fxsaga.Wait[Trip, Approved]{
			Key:    func(t *Trip) string { return t.Flight },
			Match:  func(a Approved) string { return a.Trip },
			Within: 48 * time.Hour, // else it compensates
			Then: func(_ context.Context, t *Trip, _ Approved) error {
				t.Hotel = "approved"
				return nil
			},
		}),
		hotel{},
	)

	ctx := context.Background()
	_, err := fxsaga.Run(ctx, runner, trip, Trip{})
	var pending *fxsaga.Pending
	if errors.As(err, &pending) {
		fmt.Println("waits for", pending.Event, pending.Key)
	}
	_ = fxcqrs.Publish(ctx, m, Approved{Trip: "LH 123"})
	st, _ := store.Load(ctx, pending.SagaID)
	fmt.Println(st.Status)
	// Output:
	// flight booked
	// waits for fxsaga_test.Approved LH 123
	// hotel booked after the approval
	// COMPLETED
}

type hotel struct{}

func (hotel) Act(_ context.Context, t *Trip) error {
	fmt.Println("hotel booked after the", map[string]string{"approved": "approval"}[t.Hotel])
	return nil
}

func (hotel) Compensate(context.Context, *Trip) error { return nil }

// A saga found by its business key, the trip's booking reference: while
// one waits for its approval, a second start for the same booking is
// refused and names it.
func ExampleSaga_KeyBy() {
	m, _ := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}, fxsaga.NewDeadlineHandler()),
		fxcqrs.WithEventHandlers(fxsaga.NewResumer[Approved]()))
	defer m.Stop(context.Background()) //nolint:errcheck // an example
	store := fxsaga.NewMemory()
	runner := fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{}, nil)
	trip := fxsaga.Define[Trip]("trip",
		BookFlight{},
		fxsaga.Await(fxsaga.Wait[Trip, Approved]{
			Key:    func(t *Trip) string { return t.Flight },
			Match:  func(a Approved) string { return a.Trip },
			Within: 48 * time.Hour,
		}),
	).KeyBy(func(t *Trip) string { return "booking-" + t.Hotel })

	ctx := context.Background()
	_, _ = fxsaga.Run(ctx, runner, trip, Trip{Hotel: "7"})
	_, err := fxsaga.Run(ctx, runner, trip, Trip{Hotel: "7"})
	var started *fxsaga.AlreadyStarted
	fmt.Println(errors.As(err, &started))
	found, _ := store.ByKey(ctx, "trip", "booking-7")
	fmt.Println(len(found), found[0].Status, found[0].ID == started.SagaID)
	// Output:
	// flight booked
	// true
	// 1 WAITING true
}
