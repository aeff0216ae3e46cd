package fxsaga_test

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// BookParcel asks a courier for a parcel number.
type BookParcel struct{ Order int }

// courierAPI is the primary courier, down.
type courierAPI struct{ calls *atomic.Int32 }

func (c courierAPI) Handle(context.Context, BookParcel) (string, error) {
	c.calls.Add(1)
	return "", errors.New("courier API down")
}

// backupCourier is its fallback.
type backupCourier struct{}

func (backupCourier) Handle(_ context.Context, b BookParcel) (string, error) {
	return "backup-parcel", nil
}

// booking is a step whose act calls the courier through the mediator.
type booking struct{ m *fxcqrs.Mediator }

func (s booking) Act(ctx context.Context, o *Order) error {
	parcel, err := fxcqrs.Send[string](ctx, s.m, BookParcel{Order: o.ID})
	o.Shipment = parcel
	return err
}

func (booking) Compensate(context.Context, *Order) error { return nil }

// A step's act gets a circuit breaker and a fallback as any call does:
// it makes the call through the mediator, and the call's handler has
// them. The courier fails twice, its breaker opens, and the third saga's
// step is answered by the fallback without reaching the courier; every
// saga completes. (Compensations are retried, not replaced: give them
// no fallback.)
func TestStepFallbackAndBreaker(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}),
		fxcqrs.WithRequestHandlers(courierAPI{&calls}),
		fxcqrs.WithFallback(backupCourier{}),
		fxcqrs.WithMiddleware(fxcqrs.ForMessages(
			fxcqrs.Breaker(fxcqrs.BreakerConfig{ConsecutiveFailures: 2, OpenDuration: time.Hour}),
			reflect.TypeFor[BookParcel]())),
	)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	r := fxsaga.NewRunner(m, fxsaga.NewMemory(), fxsaga.RunnerConfig{}, nil)
	s := fxsaga.Define[Order]("shipping", booking{m})
	for i := range 3 {
		o, err := fxsaga.Run(context.Background(), r, s, Order{ID: i})
		require.NoError(t, err)
		assert.Equal(t, "backup-parcel", o.Shipment)
	}
	assert.Equal(t, int32(2), calls.Load(), "the open breaker spared the courier the third call")
}
