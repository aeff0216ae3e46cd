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

// A message that waits for its rate limit's budget is counted under the
// outcome throttled; the one that went at once is only handled.
func TestThrottledMessagesAreCounted(t *testing.T) {
	ctx := context.Background()
	tp := fmt.Sprintf("otelops_throttled_%x", rand.Uint64())
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	never := make(chan time.Time) // the clock does not move: the second waits
	consumer, err := fxbus.New(fxbus.Config{
		Now:   func() time.Time { return now },
		After: func(time.Duration) <-chan time.Time { return never },
	}, nil, []fxbus.Subscription{fxbus.NewSubscription[Placed](tp,
		fxbus.RateLimit(fxbus.Limit{Per: fxbus.PerType, Rate: 1, Every: time.Hour}))})
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(eventFunc[Placed](func(context.Context, Placed) error { return nil })))
	require.NoError(t, err)
	require.NoError(t, consumer.Start(ctx, m))
	t.Cleanup(func() {
		require.NoError(t, consumer.Stop(ctx))
		require.NoError(t, m.Stop(ctx))
	})
	producer, err := fxbus.New(fxbus.Config{}, []fxbus.Routing{fxbus.NewRoute[Placed](tp)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, producer.Stop(ctx)) })

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { require.NoError(t, mp.Shutdown(ctx)) })
	unregister, err := otelops.Register(mp, otelops.Sources{Bus: consumer})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, unregister()) })

	require.NoError(t, producer.Forward(ctx, []any{Placed{}, Placed{}}))
	require.Eventually(t, func() bool { st := consumer.Stats(); return st.Handled == 1 && st.Throttled == 1 }, time.Minute, time.Millisecond)

	got := points(t, reader)["fxcqrs.bus.messages"]
	assert.Equal(t, float64(1), got[set(otelops.OutcomeKey.String("throttled"))])
	assert.Equal(t, float64(1), got[set(otelops.OutcomeKey.String("handled"))])
}
