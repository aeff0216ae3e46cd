package fxcqrsotel_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	PlaceOrder  struct{ ID int }
	OrderPlaced struct{ ID int }
	Shipped     struct{ ID int }
)

type placeOrder struct{}

func (placeOrder) Handle(ctx context.Context, c PlaceOrder) error {
	fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
	fxcqrs.Emit(ctx, Shipped{ID: c.ID})
	return nil
}

type onPlaced struct{}

func (onPlaced) Handle(context.Context, OrderPlaced) error { return nil }

type onShipped struct{}

func (onShipped) Handle(context.Context, Shipped) error { return errors.New("carrier down") }

func setup(t *testing.T) (*fxcqrs.Mediator, *tracetest.SpanRecorder, *sdkmetric.ManualReader) {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		require.NoError(t, tp.Shutdown(context.Background()))
		require.NoError(t, mp.Shutdown(context.Background()))
	})
	obs, err := fxcqrsotel.New(tp, mp)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 1}},
		fxcqrs.WithObserver(obs),
		fxcqrs.WithCommandHandlers(placeOrder{}),
		fxcqrs.WithEventHandlers(onPlaced{}, onShipped{}),
	)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	return m, spans, reader
}

func TestSpansShowTheFanOut(t *testing.T) {
	m, spans, _ := setup(t)
	err := fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1})
	require.Error(t, err)

	ended := spans.Ended()
	require.Len(t, ended, 3)
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		byName[s.Name()] = s
	}
	call := byName["command github.com/fxcqrs/fxcqrs/fxcqrsotel_test.PlaceOrder"]
	require.NotNil(t, call, "names: %v", byName)
	placed := byName["event github.com/fxcqrs/fxcqrs/fxcqrsotel_test.OrderPlaced -> github.com/fxcqrs/fxcqrs/fxcqrsotel_test.onPlaced"]
	shipped := byName["event github.com/fxcqrs/fxcqrs/fxcqrsotel_test.Shipped -> github.com/fxcqrs/fxcqrs/fxcqrsotel_test.onShipped"]
	require.NotNil(t, placed)
	require.NotNil(t, shipped)

	assert.Equal(t, call.SpanContext().SpanID(), placed.Parent().SpanID(), "invocations are children of the call")
	assert.Equal(t, call.SpanContext().SpanID(), shipped.Parent().SpanID())
	assert.Equal(t, call.SpanContext().TraceID(), shipped.SpanContext().TraceID())
	assert.Equal(t, codes.Error, shipped.Status().Code)
	assert.Equal(t, codes.Unset, placed.Status().Code)
	assert.Equal(t, codes.Error, call.Status().Code, "the call reports its EventError")
}

func TestMetrics(t *testing.T) {
	m, _, reader := setup(t)
	require.Error(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	require.Error(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 2}))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		assert.Equal(t, fxcqrsotel.ScopeName, sm.Scope.Name)
		for _, md := range sm.Metrics {
			got[md.Name] = md.Data
		}
	}
	// errorType "" counts successes (no error.type), "*" every data point.
	sumOf := func(name string, errorType string) int64 {
		t.Helper()
		sum, ok := got[name].(metricdata.Sum[int64])
		require.True(t, ok, "%s: %T", name, got[name])
		var total int64
		for _, dp := range sum.DataPoints {
			v, _ := dp.Attributes.Value(fxcqrsotel.ErrorTypeKey)
			if errorType == "*" || v.AsString() == errorType {
				total += dp.Value
			}
		}
		return total
	}
	assert.Equal(t, int64(2), sumOf("fxcqrs.calls", "*fxcqrs.EventError"))
	assert.Equal(t, int64(2), sumOf("fxcqrs.invocations", ""), "successes carry no error.type")
	assert.Equal(t, int64(2), sumOf("fxcqrs.invocations", "*errors.errorString"))
	assert.Equal(t, int64(0), sumOf("fxcqrs.invocations.running", "*"), "nothing left running")
	assert.Equal(t, int64(0), sumOf("fxcqrs.invocations.waiting", "*"), "nothing left waiting")
	for _, name := range []string{"fxcqrs.call.duration", "fxcqrs.invocation.duration", "fxcqrs.invocation.wait"} {
		h, ok := got[name].(metricdata.Histogram[float64])
		require.True(t, ok, name)
		var n uint64
		for _, dp := range h.DataPoints {
			n += dp.Count
		}
		assert.NotZero(t, n, name)
	}
}

func TestNotStartedIsAnEventOnTheCall(t *testing.T) {
	m, spans, reader := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, fxcqrs.Publish(ctx, m, OrderPlaced{}), fxcqrs.ErrNotStarted)
	ended := spans.Ended()
	require.Len(t, ended, 1, "no span for an invocation that never ran")
	var names []string
	for _, ev := range ended[0].Events() {
		names = append(names, ev.Name)
	}
	assert.Equal(t, []string{"fxcqrs.invocation_not_started", "exception"}, names,
		"the drop, then the call's error recorded on its span")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	var notStarted int64
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if md.Name != "fxcqrs.invocations" {
				continue
			}
			for _, dp := range md.Data.(metricdata.Sum[int64]).DataPoints {
				if v, _ := dp.Attributes.Value(fxcqrsotel.ErrorTypeKey); v.AsString() == "fxcqrs.ErrNotStarted" {
					notStarted += dp.Value
				}
			}
		}
	}
	assert.Equal(t, int64(1), notStarted)
}

// Durations are seconds in buckets made for in-process calls: a 30µs call,
// a 3ms one and a 2s one land in three different buckets, where the SDK's
// default bounds (made for milliseconds) would put all three in one.
func TestDurationBuckets(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { require.NoError(t, mp.Shutdown(context.Background())) })
	obs, err := fxcqrsotel.New(tracenoop.NewTracerProvider(), mp)
	require.NoError(t, err)
	call := fxcqrs.Call{Kind: fxcqrs.KindRequest, MessageType: "Q"}
	for _, d := range []time.Duration{30 * time.Microsecond, 3 * time.Millisecond, 2 * time.Second} {
		obs.CallFinished(context.Background(), fxcqrs.CallFinished{Call: call, Elapsed: d})
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	var h metricdata.Histogram[float64]
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if md.Name == "fxcqrs.call.duration" {
				h = md.Data.(metricdata.Histogram[float64])
			}
		}
	}
	require.Len(t, h.DataPoints, 1)
	dp := h.DataPoints[0]
	assert.Equal(t, fxcqrsotel.Buckets, dp.Bounds)
	bucketOf := func(seconds float64) int {
		for i, b := range dp.Bounds {
			if seconds <= b {
				return i
			}
		}
		return len(dp.Bounds)
	}
	want := make([]uint64, len(dp.Bounds)+1)
	want[bucketOf(30e-6)]++
	want[bucketOf(3e-3)]++
	want[bucketOf(2)]++
	assert.Equal(t, want, dp.BucketCounts)
	assert.Equal(t, 3, len(slices.DeleteFunc(slices.Clone(dp.BucketCounts), func(n uint64) bool { return n == 0 })), "three buckets")
	assert.InDelta(t, 2.00303, dp.Sum, 1e-9, "seconds")
}

// One line wires the observer under fx, from the graph's providers.
func TestModule(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	var m *fxcqrs.Mediator
	app := fxtest.New(t,
		fxcqrs.Module,
		fxcqrsotel.Module,
		fx.Supply(fx.Annotate(tp, fx.As(new(trace.TracerProvider)))),
		fxcqrs.AsCommandHandler(func() placeOrder { return placeOrder{} }),
		fxcqrs.AsEventHandler(func() onPlaced { return onPlaced{} }),
		fx.Populate(&m),
	)
	app.RequireStart()
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	app.RequireStop()
	assert.Len(t, spans.Ended(), 2, "the call and its one invocation")
}
