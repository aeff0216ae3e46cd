package otelops_test

import (
	"context"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel/otelops"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

type (
	Place   struct{}
	Placed  struct{}
	Remind  struct{}
	Audited struct{}
)

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

// points reads one collection into name → attributes → value.
func points(t *testing.T, r *sdkmetric.ManualReader) map[string]map[attribute.Distinct]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := map[string]map[attribute.Distinct]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			vals := map[attribute.Distinct]float64{}
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					vals[p.Attributes.Equivalent()] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					vals[p.Attributes.Equivalent()] = p.Value
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					vals[p.Attributes.Equivalent()] = float64(p.Value)
				}
			}
			out[m.Name] = vals
		}
	}
	return out
}

func set(kvs ...attribute.KeyValue) attribute.Distinct {
	s := attribute.NewSet(kvs...)
	return s.Equivalent()
}

// The instruments read the outbox's backlog and lag by its clock, its
// schedule, the bus's and the runner's counters and the sagas by status,
// at each collection.
func TestMetrics(t *testing.T) {
	ctx := context.Background()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	clock := outboxtest.NewClock(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	bus, err := fxbus.New(fxbus.Config{}, []fxbus.Routing{fxbus.NewRoute[Placed]("orders"), fxbus.NewRoute[Audited]("audit")}, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Now: clock.Now, After: clock.After}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()), fxcqrs.WithCommandHandlers(
		commandFunc[Place](func(ctx context.Context, _ Place) error {
			fxcqrs.Emit(ctx, Placed{})
			fxcqrs.Emit(ctx, Placed{})
			fxcqrs.Emit(ctx, Audited{})
			return nil
		}),
		commandFunc[Remind](func(ctx context.Context, _ Remind) error {
			_, err := fxoutbox.ScheduleAfter(ctx, time.Hour, Audited{})
			return err
		})))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(ctx)) })
	o.DeliverTo(m)
	store := fxsaga.NewMemory()
	require.NoError(t, store.Create(ctx, fxsaga.State{ID: "a", Name: "order", Status: fxsaga.Waiting, Version: 1, Context: []byte("{}")}))
	require.NoError(t, store.Create(ctx, fxsaga.State{ID: "b", Name: "order", Status: fxsaga.Completed, Version: 1, Context: []byte("{}")}))
	runner := fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{}, nil)

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { require.NoError(t, mp.Shutdown(ctx)) })
	unregister, err := otelops.Register(mp, otelops.Sources{Outbox: o, Bus: bus, Runner: runner, Sagas: store})
	require.NoError(t, err)

	require.NoError(t, fxcqrs.Exec(ctx, m, Place{}))
	require.NoError(t, fxcqrs.Exec(ctx, m, Remind{}))
	clock.Advance(3 * time.Second)
	got := points(t, reader)
	orders, audit := set(otelops.TopicKey.String("orders")), set(otelops.TopicKey.String("audit"))
	assert.Equal(t, map[attribute.Distinct]float64{orders: 2, audit: 1}, got["fxcqrs.outbox.backlog"])
	assert.Equal(t, map[attribute.Distinct]float64{orders: 3, audit: 3}, got["fxcqrs.outbox.lag"], "seconds, by the outbox's clock")
	assert.Equal(t, map[attribute.Distinct]float64{set(): 1}, got["fxcqrs.outbox.scheduled"])
	assert.Equal(t, map[attribute.Distinct]float64{
		set(otelops.SagaKey.String("order"), otelops.StatusKey.String("WAITING")):   1,
		set(otelops.SagaKey.String("order"), otelops.StatusKey.String("COMPLETED")): 1,
	}, got["fxcqrs.sagas"])
	assert.Equal(t, float64(0), got["fxcqrs.bus.messages"][set(otelops.OutcomeKey.String("handled"))])
	assert.Contains(t, got, "fxcqrs.saga.events")

	require.NoError(t, unregister())
	assert.NotContains(t, points(t, reader), "fxcqrs.outbox.backlog", "unregistered")
}
