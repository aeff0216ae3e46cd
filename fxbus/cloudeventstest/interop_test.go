package cloudeventstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/extensions"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// Events of the tests.
type (
	OrderPlaced struct {
		ID    int    `json:"id"`
		Label string `json:"label"`
	}
	OrderConfirmed struct {
		ID int `json:"id"`
	}
)

// wait bounds every wait: generous, as the machine is shared.
const wait = 60 * time.Second

// broker is a broker under test: its adapter, and its native client to
// put a message on the wire, and take one off, as a foreign service
// would.
type broker struct {
	proto  protocol
	pubsub interface {
		message.Publisher
		message.Subscriber
	}
	send   func(t *testing.T, topic, key string, m wire)
	listen func(t *testing.T, topic string) <-chan wire
}

func name(kind string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return kind + "_" + hex.EncodeToString(b)
}

// traceContext is the test's propagator of the W3C traceparent: it
// carries it from the handling context into the messages emitted under
// it, as the otel module's does (with a span of its own between).
type traceContext struct{}

type traceKey struct{}

func (traceContext) Inject(ctx context.Context, md message.Metadata) {
	if tp, _ := ctx.Value(traceKey{}).(string); tp != "" {
		md.Set("traceparent", tp)
	}
}

func (traceContext) Extract(ctx context.Context, md message.Metadata) context.Context {
	return context.WithValue(ctx, traceKey{}, md.Get("traceparent"))
}

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

type received struct {
	event       OrderPlaced
	id          string
	traceparent string
}

// interop runs the round trip on a broker, in both content modes: an
// event the SDK encodes is handled by an fxcqrs subscription (its id, data
// and trace context), whose handler emits an event that an fxcqrs route
// puts on the wire as a CloudEvent, which the SDK decodes to the
// attributes the route gave it, the trace continuing.
func interop(t *testing.T, newBroker func(t *testing.T) broker) {
	for _, structured := range []bool{false, true} {
		t.Run(map[bool]string{false: "binary", true: "structured"}[structured], func(t *testing.T) {
			b := newBroker(t)
			in, out := name("ce_in"), name("ce_out")
			got := make(chan received, 1)
			app := fxtest.New(t,
				fx.NopLogger,
				fxcqrs.Module,
				fxbus.Module,
				fx.Supply(fx.Annotate(b.pubsub, fx.As(new(message.Publisher)))),
				fx.Supply(fx.Annotate(b.pubsub, fx.As(new(message.Subscriber)))),
				fxbus.Subscribe[OrderPlaced](in, fxbus.Name("com.example.orders.placed")),
				fxbus.Route[OrderConfirmed](out,
					fxbus.KeyBy(func(e OrderConfirmed) string { return "order-" + strconv.Itoa(e.ID) }),
					fxbus.CloudEvents(fxbus.CloudEventsConfig{
						Source: "/billing", Structured: structured,
						Subject: func(e any) string { return "order " + strconv.Itoa(e.(OrderConfirmed).ID) },
					})),
				fxbus.AsPropagator(func() fxbus.Propagator { return traceContext{} }),
				fxcqrs.AsEventHandler(func() eventHandler {
					return func(ctx context.Context, e OrderPlaced) error {
						tp, _ := ctx.Value(traceKey{}).(string)
						got <- received{event: e, id: fxbus.MessageID(ctx), traceparent: tp}
						fxcqrs.Emit(ctx, OrderConfirmed{ID: e.ID})
						return nil
					}
				}),
			)
			app.RequireStart()
			defer app.RequireStop()
			raw := b.listen(t, out)

			e := event.New()
			e.SetID("evt-42")
			e.SetSource("/orders")
			e.SetType("com.example.orders.placed")
			e.SetSubject("order 7")
			e.SetTime(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
			require.NoError(t, e.SetData(event.ApplicationJSON, OrderPlaced{ID: 7, Label: "très bien"}))
			e.SetExtension("partitionkey", "order-7")
			extensions.DistributedTracingExtension{TraceParent: traceparent}.AddTracingAttributes(&e)
			w, err := b.proto.encode(e, structured)
			require.NoError(t, err)
			b.send(t, in, "order-7", w)

			select {
			case r := <-got:
				assert.Equal(t, OrderPlaced{ID: 7, Label: "très bien"}, r.event)
				assert.Equal(t, "evt-42", r.id, "the CloudEvent's id is the message id")
				assert.Equal(t, traceparent, r.traceparent, "the trace context reaches the handler")
			case <-time.After(wait):
				t.Fatal("the SDK's event was not handled")
			}

			var m wire
			select {
			case m = <-raw:
			case <-time.After(wait):
				t.Fatal("the routed event did not arrive")
			}
			ev, err := b.proto.decode(m)
			require.NoError(t, err, "headers %v body %s", m.headers, m.body)
			require.NoError(t, ev.Validate())
			assert.NotEmpty(t, ev.ID())
			assert.Equal(t, "/billing", ev.Source())
			assert.Equal(t, "OrderConfirmed.v1", ev.Type())
			assert.Equal(t, "order 7", ev.Subject())
			assert.Equal(t, event.ApplicationJSON, ev.DataContentType())
			assert.WithinDuration(t, time.Now(), ev.Time(), time.Minute)
			var data OrderConfirmed
			require.NoError(t, ev.DataAs(&data))
			assert.Equal(t, OrderConfirmed{ID: 7}, data)
			assert.Equal(t, "order-7", ev.Extensions()["partitionkey"])
			dt, ok := extensions.GetDistributedTracingExtension(*ev)
			require.True(t, ok, "the distributed tracing extension")
			assert.Equal(t, strings.Split(traceparent, "-")[1], strings.Split(dt.TraceParent, "-")[1], "the trace continues")
		})
	}
}

type eventHandler func(context.Context, OrderPlaced) error

func (f eventHandler) Handle(ctx context.Context, e OrderPlaced) error { return f(ctx, e) }
