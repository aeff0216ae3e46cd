package otelops_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel/otelops"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// A message received after its deliver-by time is counted under the
// outcome expired, not dead_lettered.
func TestExpiredMessagesAreAnOutcome(t *testing.T) {
	ctx := context.Background()
	tp := fmt.Sprintf("otelops_expiry_%x", rand.Uint64())
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	consumer, err := fxbus.New(fxbus.Config{Now: func() time.Time { return now }}, nil, []fxbus.Subscription{fxbus.NewSubscription[Placed](tp)})
	require.NoError(t, err)
	handled := make(chan struct{}, 2)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(eventFunc[Placed](func(context.Context, Placed) error {
		handled <- struct{}{}
		return nil
	})))
	require.NoError(t, err)
	require.NoError(t, consumer.Start(ctx, m))
	t.Cleanup(func() {
		require.NoError(t, consumer.Stop(ctx))
		require.NoError(t, m.Stop(ctx))
	})
	producerNow := now.Add(-time.Hour)
	producer, err := fxbus.New(fxbus.Config{Now: func() time.Time { return producerNow }},
		[]fxbus.Routing{fxbus.NewRoute[Placed](tp, fxbus.DeliverWithin(time.Minute))}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, producer.Stop(ctx)) })

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { require.NoError(t, mp.Shutdown(ctx)) })
	unregister, err := otelops.Register(mp, otelops.Sources{Bus: consumer})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, unregister()) })

	require.NoError(t, producer.Forward(ctx, []any{Placed{}})) // made an hour ago, worth a minute
	require.Eventually(t, func() bool { return consumer.Stats().Expired == 1 }, time.Minute, time.Millisecond)
	producerNow = now
	require.NoError(t, producer.Forward(ctx, []any{Placed{}}))
	<-handled
	require.Eventually(t, func() bool { return consumer.Stats().Handled == 1 }, time.Minute, time.Millisecond)

	got := points(t, reader)["fxcqrs.bus.messages"]
	assert.Equal(t, float64(1), got[set(otelops.OutcomeKey.String("expired"))])
	assert.Equal(t, float64(0), got[set(otelops.OutcomeKey.String("dead_lettered"))], "the expired one is not among the failures")
	assert.Equal(t, float64(1), got[set(otelops.OutcomeKey.String("handled"))])
}
