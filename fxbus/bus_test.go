package fxbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

func goChannel(t *testing.T) *gochannel.GoChannel {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64}, watermill.NopLogger{})
	t.Cleanup(func() { require.NoError(t, gc.Close()) })
	return gc
}

// Two services over one broker: the orders service routes OrderPlaced,
// the billing service subscribes to it and routes OrderPaid back; the
// chain's correlation id and causation ids cross both.
func TestRoundTripAndCorrelation(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	placed, paid := topic(t, "orders"), topic(t, "payments")

	billed := newInbox[OrderPlaced]()
	var billedCtx atomic.Value // the context billing handled the event under
	service(t, gc, gc,
		fxbus.Subscribe[OrderPlaced](placed),
		fxbus.Route[OrderPaid](paid),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(ctx context.Context, e OrderPlaced) error {
				billedCtx.Store(ctx)
				billed.add(e)
				fxcqrs.Emit(ctx, OrderPaid{ID: e.ID})
				return nil
			}
		}),
	)

	paidBack := newInbox[string]() // correlation|causation of OrderPaid at the orders service
	local := newInbox[OrderPlaced]()
	orders := service(t, gc, gc,
		fxbus.Route[OrderPlaced](placed),
		fxbus.Subscribe[OrderPaid](paid),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID, Label: "keyboard"})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(_ context.Context, e OrderPlaced) error { local.add(e); return nil }
		}),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPaid] {
			return func(ctx context.Context, _ OrderPaid) error {
				paidBack.add(fxbus.CorrelationID(ctx) + "|" + fxbus.MessageID(ctx))
				return nil
			}
		}),
	)

	require.NoError(t, fxcqrs.Exec(context.Background(), orders, PlaceOrder{ID: 7}))
	assert.Equal(t, []OrderPlaced{{ID: 7, Label: "keyboard"}}, local.all(), "routed events still run in-process")
	assert.Equal(t, []OrderPlaced{{ID: 7, Label: "keyboard"}}, billed.wait(t, 1))

	ctx := billedCtx.Load().(context.Context)
	placedID := fxbus.MessageID(ctx)
	id, err := uuid.Parse(placedID)
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(7), id.Version(), "message ids are UUIDv7")
	assert.Equal(t, placedID, fxbus.CorrelationID(ctx), "the first message of a chain is its own correlation")

	back := paidBack.wait(t, 1)[0]
	assert.Equal(t, placedID, back[:len(placedID)], "OrderPaid carries the chain's correlation id")
	assert.NotEqual(t, placedID, back[len(placedID)+1:], "OrderPaid has an id of its own")
}

// What a consumer in another language sees: the documented metadata and a
// JSON payload.
func TestWireFormat(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	orders, renamed, audit := topic(t, "orders"), topic(t, "renamed"), topic(t, "audit")
	raw := map[string]<-chan *message.Message{}
	for _, tp := range []string{orders, renamed, audit} {
		ch, err := gc.Subscribe(context.Background(), tp)
		require.NoError(t, err)
		raw[tp] = ch
	}
	m := service(t, gc, gc,
		fxbus.Route[OrderPlaced](orders),
		fxbus.Route[OrderPaid](renamed, fxbus.Name("billing.order_paid")),
		fxbus.Route[DomainEvent](audit), // every event that implements it
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID, Label: "x"})
				fxcqrs.Emit(ctx, OrderPaid{ID: c.ID})
				fxcqrs.Emit(ctx, ShipmentLost{ID: c.ID})
				return nil
			}
		}),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))

	next := func(tp string) *message.Message {
		msg := <-raw[tp]
		msg.Ack()
		return msg
	}
	msg := next(orders)
	assert.Equal(t, "OrderPlaced", msg.Metadata.Get(fxbus.MetadataName))
	assert.Equal(t, "application/json", msg.Metadata.Get(fxbus.MetadataContentType))
	assert.Equal(t, msg.UUID, msg.Metadata.Get(fxbus.MetadataCorrelationID))
	assert.Empty(t, msg.Metadata.Get(fxbus.MetadataCausationID))
	assert.JSONEq(t, `{"id":1,"label":"x"}`, string(msg.Payload))

	assert.Equal(t, "billing.order_paid", next(renamed).Metadata.Get(fxbus.MetadataName), "Name overrides the wire name")

	// GoChannel does not keep the order of a batch; the brokers' tests do.
	first, second := next(audit), next(audit)
	if first.Metadata.Get(fxbus.MetadataName) != "OrderPlaced" {
		first, second = second, first
	}
	assert.Equal(t, "OrderPlaced", first.Metadata.Get(fxbus.MetadataName), "an interface route takes every implementing event")
	assert.Equal(t, msg.UUID, first.UUID, "one message per event, sent to each of its topics")
	assert.Equal(t, "ShipmentLost", second.Metadata.Get(fxbus.MetadataName))
	var lost map[string]any
	require.NoError(t, json.Unmarshal(second.Payload, &lost))
	assert.Equal(t, map[string]any{"ID": float64(1)}, lost)
}

// A handler that fails publishes nothing.
func TestFailedHandlerPublishesNothing(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "orders")
	raw, err := gc.Subscribe(context.Background(), tp)
	require.NoError(t, err)
	errBoom := errors.New("boom")
	m := service(t, gc, gc,
		fxbus.Route[OrderPlaced](tp),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				if c.ID < 0 {
					return errBoom
				}
				return nil
			}
		}),
	)
	require.ErrorIs(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: -1}), errBoom)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 2}))
	msg := <-raw
	msg.Ack()
	assert.JSONEq(t, `{"id":2,"label":""}`, string(msg.Payload), "the first message on the topic is the successful call's")
}

// failingPublisher refuses every message.
type failingPublisher struct{ err error }

func (p failingPublisher) Publish(string, ...*message.Message) error { return p.err }
func (p failingPublisher) Close() error                              { return nil }

// A publish failure does not erase the handler's success: the response
// comes with a *fxbus.PublishError, and local handlers still ran.
func TestPublishFailureIsReportedBeside(t *testing.T) {
	t.Parallel()
	errBroker := errors.New("broker down")
	ran := newInbox[OrderPlaced]()
	m := service(t, failingPublisher{err: errBroker}, nil,
		fxbus.Route[OrderPlaced](topic(t, "orders")),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error { fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID}); return nil }
		}),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(_ context.Context, e OrderPlaced) error { ran.add(e); return nil }
		}),
	)
	err := fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 4})
	var pubErr *fxbus.PublishError
	require.ErrorAs(t, err, &pubErr)
	require.ErrorIs(t, err, errBroker)
	require.Len(t, pubErr.Failures, 1)
	assert.Equal(t, OrderPlaced{ID: 4}, pubErr.Failures[0].Event)
	assert.Equal(t, []OrderPlaced{{ID: 4}}, ran.all(), "in-process handlers ran")
}

// flaky fails its first n calls.
type flaky struct {
	calls atomic.Int32
	n     int32
	seen  *inbox[OrderPlaced]
}

func (f *flaky) Handle(_ context.Context, e OrderPlaced) error {
	if f.calls.Add(1) <= f.n {
		return errors.New("not yet")
	}
	f.seen.add(e)
	return nil
}

// A message whose handler fails is retried in the process and acknowledged
// once a retry succeeds; one that keeps failing lands in the dead letter
// with its reason; one that cannot be decoded lands there at once.
func TestInboundRetryAndDeadLetter(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	ok, poisoned, garbled := topic(t, "retried"), topic(t, "poisoned"), topic(t, "garbled")
	retry := fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 2, InitialInterval: 1, MaxInterval: 1})
	deadPoisoned := deadLetters(t, gc, poisoned+"_poison")
	deadGarbled := deadLetters(t, gc, "garbled_dead_"+garbled)

	recovered := &flaky{n: 2, seen: newInbox[OrderPlaced]()}
	var poisonedCalls, garbledCalls atomic.Int32
	var bus *fxbus.Bus
	service(t, gc, gc, fx.Populate(&bus),
		fxbus.Subscribe[OrderPlaced](ok, retry),
		fxbus.Subscribe[OrderPaid](poisoned, retry),
		fxbus.Subscribe[Shipped](garbled, retry, fxbus.DeadLetter("garbled_dead_"+garbled)),
		fxcqrs.AsEventHandler(func() *flaky { return recovered }),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPaid] {
			return func(context.Context, OrderPaid) error { poisonedCalls.Add(1); return errors.New("ledger rejects it") }
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Shipped] {
			return func(context.Context, Shipped) error { garbledCalls.Add(1); return nil }
		}),
	)

	send := func(tp, name, payload string) string {
		msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
		if name != "" {
			msg.Metadata.Set(fxbus.MetadataName, name)
		}
		require.NoError(t, gc.Publish(tp, msg))
		return msg.UUID
	}
	send(ok, "OrderPlaced", `{"id":1}`)
	assert.Equal(t, []OrderPlaced{{ID: 1}}, recovered.seen.wait(t, 1))
	assert.Equal(t, int32(3), recovered.calls.Load(), "two failures, then success")

	id := send(poisoned, "", `{"ID":2}`) // no name: the topic's one type
	dead := <-deadPoisoned
	dead.Ack()
	assert.Equal(t, id, dead.UUID)
	assert.Contains(t, dead.Metadata.Get(middleware.ReasonForPoisonedKey), "ledger rejects it")
	assert.Equal(t, int32(3), poisonedCalls.Load(), "the first attempt and two retries")

	id = send(garbled, "Shipped", `{"ID": "not a number"`)
	dead = <-deadGarbled
	dead.Ack()
	assert.Equal(t, id, dead.UUID)
	assert.Contains(t, dead.Metadata.Get(middleware.ReasonForPoisonedKey), "malformed message")
	assert.Zero(t, garbledCalls.Load(), "never handed to the mediator, never retried")
	require.Eventually(t, func() bool { st := bus.Stats(); return st.DeadLettered == 2 && st.Handled == 1 }, time.Minute, time.Millisecond)
	st := bus.Stats()
	assert.Equal(t, uint64(1), st.Handled, "the one that recovered")
	assert.Equal(t, uint64(4), st.Retried, "two retries of each failing message; none of the malformed one")
	assert.Zero(t, st.Redelivered)
}

// A message for an event name nobody here subscribes to is acknowledged
// and skipped; the topic goes on.
func TestUnknownEventNameIsSkipped(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "mixed")
	got := newInbox[OrderPlaced]()
	var bus *fxbus.Bus
	service(t, gc, gc, fx.Populate(&bus),
		fxbus.Subscribe[OrderPlaced](tp),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(_ context.Context, e OrderPlaced) error { got.add(e); return nil }
		}),
	)
	other := message.NewMessage(watermill.NewUUID(), []byte(`{}`))
	other.Metadata.Set(fxbus.MetadataName, "InvoiceSent")
	require.NoError(t, gc.Publish(tp, other))
	placed := message.NewMessage(watermill.NewUUID(), []byte(`{"id":3}`))
	placed.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
	require.NoError(t, gc.Publish(tp, placed))
	assert.Equal(t, []OrderPlaced{{ID: 3}}, got.wait(t, 1))
	// Counted once the handler has returned, after it added the event.
	require.Eventually(t, func() bool { st := bus.Stats(); return st.Skipped == 1 && st.Handled == 1 }, time.Minute, time.Millisecond)
}

// Misconfiguration fails fx.New, naming the culprit.
func TestModuleErrors(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	for _, tc := range []struct {
		name string
		pub  message.Publisher
		sub  message.Subscriber
		opts []fx.Option
		want string
	}{
		{"route without publisher", nil, gc, []fx.Option{fxbus.Route[OrderPlaced]("orders")}, "routes (the first to \"orders\") but no message.Publisher"},
		{"subscription without subscriber", gc, nil, []fx.Option{fxbus.Subscribe[OrderPlaced]("orders")}, "subscriptions (the first to \"orders\") but no message.Subscriber"},
		{"two routes of one type to one topic", gc, gc, []fx.Option{fxbus.Route[OrderPlaced]("orders"), fxbus.Route[OrderPlaced]("orders")}, "two routes of fxbus_test.OrderPlaced to \"orders\""},
		{"empty topic", gc, gc, []fx.Option{fxbus.Route[OrderPlaced]("")}, "fxbus.Route[fxbus_test.OrderPlaced]: the topic is empty"},
		{"one name, two types", gc, gc, []fx.Option{fxbus.Route[OrderPlaced]("a"), fxbus.Route[OrderPaid]("b", fxbus.Name("OrderPlaced"))}, "have the same name on the wire, \"OrderPlaced\""},
		{"interface subscription", gc, gc, []fx.Option{fxbus.Subscribe[DomainEvent]("a")}, "an interface type cannot be decoded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []fx.Option{fx.NopLogger, fxcqrs.Module, fxbus.Module, fx.Invoke(func(*fxcqrs.Mediator) {})}
			if tc.pub != nil {
				opts = append(opts, fx.Supply(fx.Annotate(tc.pub, fx.As(new(message.Publisher)))))
			}
			if tc.sub != nil {
				opts = append(opts, fx.Supply(fx.Annotate(tc.sub, fx.As(new(message.Subscriber)))))
			}
			err := fx.New(append(opts, tc.opts...)...).Err()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
