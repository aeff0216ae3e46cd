package otelbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel/otelbus"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	// PlaceOrder is the orders service's command.
	PlaceOrder struct{ ID int }
	// OrderPlaced leaves orders for billing.
	OrderPlaced struct{ ID int }
	// PaymentReceived leaves billing for orders.
	PaymentReceived struct{ ID int }
)

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// broker gives each service its publisher and subscriber; nil: the
// in-process broker.
type broker func(t *testing.T, service string) fx.Option

// twoServices runs orders and billing, both traced into tp, and returns
// orders' mediator and what receives each PaymentReceived back in orders.
func twoServices(t *testing.T, tp trace.TracerProvider, b broker, topics [2]string) (*fxcqrs.Mediator, <-chan struct{}) {
	t.Helper()
	paid := make(chan struct{}, 1)
	var m *fxcqrs.Mediator
	common := func(service string) fx.Option {
		opts := []fx.Option{
			fx.NopLogger, fxcqrs.Module, fxcqrsotel.Module, fxbus.Module, otelbus.Module,
			fx.Supply(fx.Annotate(tp, fx.As(new(trace.TracerProvider)))),
		}
		if b != nil {
			opts = append(opts, b(t, service))
		}
		return fx.Options(opts...)
	}
	billing := fx.New(common("billing"),
		fxbus.Subscribe[OrderPlaced](topics[0]),
		fxbus.Route[PaymentReceived](topics[1]),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(ctx context.Context, e OrderPlaced) error {
				fxcqrs.Emit(ctx, PaymentReceived(e))
				return nil
			}
		}),
	)
	orders := fx.New(common("orders"),
		fxbus.Route[OrderPlaced](topics[0]),
		fxbus.Subscribe[PaymentReceived](topics[1]),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced(c))
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[PaymentReceived] {
			return func(context.Context, PaymentReceived) error {
				paid <- struct{}{}
				return nil
			}
		}),
		fx.Populate(&m),
	)
	for _, app := range []*fx.App{billing, orders} {
		require.NoError(t, app.Err())
		require.NoError(t, app.Start(context.Background()))
		t.Cleanup(func() { require.NoError(t, app.Stop(context.Background())) })
	}
	return m, paid
}

func natsBroker(t *testing.T) broker {
	addr := os.Getenv("FXCQRS_NATS_URL")
	if addr == "" {
		addr = "nats://127.0.0.1:4222"
	}
	u, err := url.Parse(addr)
	require.NoError(t, err)
	if conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second); err != nil {
		if os.Getenv("FXCQRS_REQUIRE_SERVICES") == "1" {
			t.Fatalf("FXCQRS_NATS_URL (%s) is unreachable and FXCQRS_REQUIRE_SERVICES=1: %v", addr, err)
		}
		t.Skipf("FXCQRS_NATS_URL (%s) is unreachable: %v", addr, err)
	} else {
		_ = conn.Close()
	}
	return func(t *testing.T, service string) fx.Option {
		ps, err := natsjs.New(natsjs.Config{URL: addr, Group: service})
		require.NoError(t, err)
		t.Cleanup(func() { _ = ps.Close() }) // after the apps stopped: registered before them
		return fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher))), fx.Annotate(ps, fx.As(new(message.Subscriber))))
	}
}

// One trace from the first command to the second service's follow-up
// and back: orders' command creates and sends OrderPlaced; billing
// processes it as a child of its creation, its handler creates
// PaymentReceived; orders processes that as a child of its creation.
func TestOneTraceAcrossServices(t *testing.T) {
	for _, tc := range []struct {
		name   string
		broker func(t *testing.T) broker
	}{
		{"in-process", func(*testing.T) broker { return nil }},
		{"nats", natsBroker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spans := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
			b := tc.broker(t)
			suffix := fmt.Sprint(rand.Uint64())
			topics := [2]string{"orders_" + suffix, "payments_" + suffix}
			if b != nil {
				t.Cleanup(func() { deleteStreams(topics[:]) })
			}
			m, paid := twoServices(t, tp, b, topics)
			require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 7}))
			select {
			case <-paid:
			case <-time.After(time.Minute):
				t.Fatal("PaymentReceived never came back")
			}
			require.NoError(t, tp.ForceFlush(context.Background()))
			byName := map[string]sdktrace.ReadOnlySpan{}
			require.Eventually(t, func() bool {
				clear(byName)
				for _, s := range spans.Ended() {
					byName[s.Name()] = s
				}
				_, ok0 := byName["process "+topics[0]]
				_, ok1 := byName["process "+topics[1]]
				return ok0 && ok1
			}, time.Minute, time.Millisecond, "a process span ends after its handlers")
			var command sdktrace.ReadOnlySpan
			for n, s := range byName {
				if strings.HasPrefix(n, "command ") && strings.HasSuffix(n, "PlaceOrder") {
					command = s
				}
			}
			require.NotNil(t, command, "names: %v", names(byName))
			createPlaced, sendPlaced := byName["create "+topics[0]], byName["send "+topics[0]]
			processPlaced, createPaid, processPaid := byName["process "+topics[0]], byName["create "+topics[1]], byName["process "+topics[1]]
			for _, s := range []sdktrace.ReadOnlySpan{createPlaced, sendPlaced, processPlaced, createPaid, processPaid} {
				require.NotNil(t, s, "names: %v", names(byName))
				assert.Equal(t, command.SpanContext().TraceID(), s.SpanContext().TraceID(), "%s in the command's trace", s.Name())
			}
			assert.Equal(t, command.SpanContext().SpanID(), createPlaced.Parent().SpanID(), "created by the command")
			assert.Equal(t, trace.SpanKindProducer, createPlaced.SpanKind())
			assert.Equal(t, trace.SpanKindProducer, sendPlaced.SpanKind())
			assert.Equal(t, createPlaced.SpanContext().SpanID(), processPlaced.Parent().SpanID(), "billing continues the message's creation")
			assert.True(t, processPlaced.Parent().IsRemote())
			assert.Equal(t, trace.SpanKindConsumer, processPlaced.SpanKind())
			assert.Equal(t, createPaid.SpanContext().SpanID(), processPaid.Parent().SpanID())
			// billing's handler runs under its process span: the follow-up
			// it created descends from it.
			assert.True(t, descends(byName, createPaid, processPlaced), "billing's follow-up under its processing")
			attrs := map[string]string{}
			for _, kv := range processPlaced.Attributes() {
				attrs[string(kv.Key)] = kv.Value.String()
			}
			assert.Equal(t, "process", attrs["messaging.operation.type"])
			assert.Equal(t, topics[0], attrs["messaging.destination.name"])
			assert.NotEmpty(t, attrs["messaging.message.id"])
			require.NoError(t, tp.Shutdown(context.Background()))
		})
	}
}

func names(m map[string]sdktrace.ReadOnlySpan) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	return out
}

// descends reports whether s has ancestor among the spans by id.
func descends(byName map[string]sdktrace.ReadOnlySpan, s, ancestor sdktrace.ReadOnlySpan) bool {
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, x := range byName {
		byID[x.SpanContext().SpanID()] = x
	}
	for cur := s; cur != nil; cur = byID[cur.Parent().SpanID()] {
		if cur.Parent().SpanID() == ancestor.SpanContext().SpanID() {
			return true
		}
	}
	return false
}

func deleteStreams(topics []string) {
	addr := os.Getenv("FXCQRS_NATS_URL")
	if addr == "" {
		addr = "nats://127.0.0.1:4222"
	}
	conn, err := nats.Connect(addr)
	if err != nil {
		return
	}
	defer conn.Close()
	if js, err := conn.JetStream(); err == nil {
		for _, tp := range topics {
			_ = js.DeleteStream(tp)
		}
	}
}
