package fxsaga_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/fxcqrs/fxcqrs"
	fxsaga "github.com/fxcqrs/fxcqrs/saga"
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
