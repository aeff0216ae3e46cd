package fxbus_test

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// Placed is version 3 of an event: version 1 was {"id","label"}, version
// 2 renamed label to title, version 3 added the currency.
type Placed struct {
	ID       int    `json:"id"`
	Title    string `json:"title"`
	Currency string `json:"currency"`
}

// Shelved is version 3 of an event whose upcasters reach back to
// version 2 only: its version 1 messages have no path.
type Shelved struct {
	ID int `json:"id"`
}

// placedUpcasters are Placed's chain, 1 → 2 → 3.
func placedUpcasters() []fxbus.Upcaster {
	return []fxbus.Upcaster{
		{Name: "Placed", From: 1, Up: func(p []byte) ([]byte, error) {
			return bytes.Replace(p, []byte(`"label"`), []byte(`"title"`), 1), nil
		}},
		fxbus.UpcastJSON("Placed", 2, func(o map[string]any) error {
			o["currency"] = "EUR"
			return nil
		}),
	}
}

func versioned(name, version, payload string) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
	msg.Metadata.Set(fxbus.MetadataName, name)
	if version != "" {
		msg.Metadata.Set(fxbus.MetadataVersion, version)
	}
	return msg
}

// A subscription upcasts what it receives before it decodes it: a
// message of version 1 (no version metadata, as written before versions
// existed) or 2 reaches the handler as version 3. One no chain reaches,
// one newer than the consumer's type (the producer was upgraded first,
// against the rule) and one with a version that is not a number go to
// the dead letter at once, with a reason naming the type and both
// versions; their handlers never see them, nothing is retried.
func TestSubscriptionUpcasts(t *testing.T) {
	t.Parallel()
	run := func(t *testing.T, b broker) {
		tp := topic(t, "versions")
		t.Cleanup(func() { b.forget(t, tp, tp+"_poison") })
		b.prepare(t, tp, "a")
		pub, sub := b.open(t, "a")
		got := newInbox[Placed]()
		var shelved atomic.Int32
		var bus *fxbus.Bus
		opts := []fx.Option{
			fx.Populate(&bus),
			fxbus.Subscribe[Placed](tp, fxbus.Version(3)),
			fxbus.Subscribe[Shelved](tp, fxbus.Version(3)),
			fxbus.AsUpcaster(fxbus.Upcaster{Name: "Shelved", From: 2, Up: func(p []byte) ([]byte, error) { return p, nil }}),
			fxcqrs.AsEventHandler(func() eventFunc[Placed] {
				return func(_ context.Context, e Placed) error { got.add(e); return nil }
			}),
			fxcqrs.AsEventHandler(func() eventFunc[Shelved] {
				return func(context.Context, Shelved) error { shelved.Add(1); return nil }
			}),
		}
		for _, u := range placedUpcasters() {
			opts = append(opts, fxbus.AsUpcaster(u))
		}
		service(t, pub, sub, opts...)
		_, deadSub := b.open(t, "dead")
		dead := deadLetters(t, deadSub, tp+"_poison")

		require.NoError(t, pub.Publish(tp,
			versioned("Placed", "", `{"id":1,"label":"one"}`),
			versioned("Placed", "2", `{"id":2,"title":"two"}`),
			versioned("Placed", "3", `{"id":3,"title":"three","currency":"USD"}`),
		))
		assert.ElementsMatch(t, []Placed{{1, "one", "EUR"}, {2, "two", "EUR"}, {3, "three", "USD"}}, got.wait(t, 3))

		reasons := map[string]string{}
		for _, msg := range []*message.Message{
			versioned("Shelved", "1", `{"id":4}`),
			versioned("Placed", "4", `{"id":5,"title":"five","currency":"EUR","vat":1}`),
			versioned("Placed", "two", `{"id":6}`),
		} {
			require.NoError(t, pub.Publish(tp, msg))
			select {
			case d := <-dead:
				d.Ack()
				reasons[d.UUID] = d.Metadata.Get(middleware.ReasonForPoisonedKey)
				assert.Equal(t, string(msg.Payload), string(d.Payload), "dead-lettered as it came")
			case <-time.After(time.Minute):
				t.Fatalf("%s never reached the dead letter", msg.UUID)
			}
		}
		require.Len(t, reasons, 3)
		var all []string
		for _, r := range reasons {
			all = append(all, r)
		}
		assert.Contains(t, all, `malformed message: fxbus: "Shelved" (fxbus_test.Shelved) version 1 has no upcaster path to version 3: the upcasters reach it from version 2 only; register an fxbus.Upcaster from version 1`)
		assert.Contains(t, all, `malformed message: fxbus: "Placed" (fxbus_test.Placed) version 4 is newer than this service's version 3: upgrade consumers before producers, then replay it`)
		assert.Contains(t, all, `malformed message: fxbus: "version" metadata "two" is not a version: a decimal integer from 1`)
		assert.Zero(t, shelved.Load())
		assert.Len(t, got.all(), 3, "nothing decoded wrong")
		require.Eventually(t, func() bool { return bus.Stats().DeadLettered == 3 }, time.Minute, time.Millisecond)
		assert.Zero(t, bus.Stats().Retried, "never retried")
	}
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		e := embeddedBroker(t, fxbus.EmbeddedConfig{})
		run(t, broker{
			name:    "embedded",
			open:    func(testing.TB, string) (message.Publisher, message.Subscriber) { return e, e },
			prepare: func(testing.TB, string, ...string) {},
			forget:  func(testing.TB, ...string) {},
		})
	})
	t.Run("nats-jetstream", func(t *testing.T) { t.Parallel(); run(t, natsBroker(t)) })
}

// A route stamps its type's version on every message; a type without
// Version is version 1, and says so.
func TestRouteStampsTheVersion(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	placed, paid := topic(t, "placed"), topic(t, "paid")
	raw := map[string]<-chan *message.Message{}
	for _, tp := range []string{placed, paid} {
		ch, err := gc.Subscribe(context.Background(), tp)
		require.NoError(t, err)
		raw[tp] = ch
	}
	var bus *fxbus.Bus
	m := service(t, gc, gc, fx.Populate(&bus),
		fxbus.Route[Placed](placed, fxbus.Version(3)),
		fxbus.Route[OrderPaid](paid),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, Placed{ID: c.ID})
				fxcqrs.Emit(ctx, OrderPaid{ID: c.ID})
				return nil
			}
		}),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	for tp, want := range map[string]string{placed: "3", paid: "1"} {
		msg := <-raw[tp]
		msg.Ack()
		assert.Equal(t, want, msg.Metadata.Get(fxbus.MetadataVersion))
	}
	assert.Equal(t, 3, bus.VersionOf(reflect.TypeFor[Placed]()))
	assert.Equal(t, 1, bus.VersionOf(reflect.TypeFor[OrderPaid]()))
	enc, err := bus.Encode(context.Background(), Placed{ID: 2})
	require.NoError(t, err)
	assert.Equal(t, "3", enc.Metadata.Get(fxbus.MetadataVersion), "Encode, for the outbox, as a route")
}

// Bus.Upcast, as the outbox calls it on a stored row: in place, to the
// current version; a message it cannot bring there is left as it was.
func TestUpcastInPlace(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	bus, err := fxbus.New(fxbus.Config{Publisher: gc, Upcasters: placedUpcasters()},
		[]fxbus.Routing{fxbus.NewRoute[Placed]("placed", fxbus.Version(3)), fxbus.NewRoute[OrderPaid]("paid")}, nil)
	require.NoError(t, err)

	msg := versioned("Placed", "1", `{"id":1,"label":"one"}`)
	require.NoError(t, bus.Upcast(msg))
	assert.JSONEq(t, `{"id":1,"title":"one","currency":"EUR"}`, string(msg.Payload))
	assert.Equal(t, "3", msg.Metadata.Get(fxbus.MetadataVersion))

	newer := versioned("Placed", "9", `{}`)
	var verr *fxbus.VersionError
	require.ErrorAs(t, bus.Upcast(newer), &verr)
	assert.True(t, verr.Newer())
	assert.Equal(t, fxbus.VersionError{Name: "Placed", Type: reflect.TypeFor[Placed](), Version: 9, Current: 3, Oldest: 1}, *verr)
	assert.Equal(t, "9", newer.Metadata.Get(fxbus.MetadataVersion))

	failing := versioned("Placed", "2", `not json`)
	err = bus.Upcast(failing)
	require.ErrorContains(t, err, `fxbus: upcast "Placed" from version 2 to 3: `)
	assert.Equal(t, "not json", string(failing.Payload), "unchanged")

	for _, m := range []*message.Message{versioned("Unknown", "7", `x`), versioned("OrderPaid", "", `x`)} {
		require.NoError(t, bus.Upcast(m), "a name the bus does not know, or a current message")
		assert.Equal(t, "x", string(m.Payload))
	}
	require.NoError(t, bus.Reaches("Placed", 1))
	require.ErrorAs(t, bus.Reaches("OrderPaid", 2), &verr)
}

// A chain that cannot work fails at start, every problem at once.
func TestUpcasterChainErrors(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	id := func(p []byte) ([]byte, error) { return p, nil }
	_, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc, Upcasters: []fxbus.Upcaster{
		{Name: "Placed", From: 1, Up: id},
		{Name: "Placed", From: 3, Up: id}, // no upcaster from 2
		{Name: "Shelved", From: 1, Up: id},
		{Name: "Shelved", From: 1, Up: id},
		{Name: "OrderPaid", From: 1, Up: id}, // OrderPaid is version 1
		{Name: "Nobody", From: 1, Up: id},
		{Name: "Shelved", From: 0},
	}}, []fxbus.Routing{
		fxbus.NewRoute[Placed]("placed", fxbus.Version(4)),
		fxbus.NewRoute[OrderPaid]("paid"),
		fxbus.NewRoute[DomainEvent]("audit", fxbus.Version(2)),
		fxbus.NewRoute[Shipped]("shipped", fxbus.Version(2)),
	}, []fxbus.Subscription{
		fxbus.NewSubscription[Shelved]("shelved", fxbus.Version(2)),
		fxbus.NewSubscription[Shipped]("shipped_in", fxbus.Version(3)),
		fxbus.NewSubscription[OrderPlaced]("placed_in", fxbus.Version(-1)),
	})
	require.Error(t, err)
	for _, want := range []string{
		`fxbus.Upcaster "Placed": the chain from version 1 to 4 has no upcaster from version [2]`,
		`fxbus.Upcaster "Shelved": two upcasters from version 1`,
		`fxbus.Upcaster "OrderPaid" from version 1: fxbus_test.OrderPaid is version 1; declare fxbus.Version(2) on its routes and subscriptions`,
		`fxbus.Upcaster "Nobody" from version 1: no route or subscription has that name`,
		`fxbus.Upcaster "Shelved": From must be 1 or more: got 0`,
		`fxbus.Upcaster "Shelved" from version 0: Up is nil`,
		`fxbus.Route[fxbus_test.DomainEvent]: Version on a route of an interface type`,
		`fxbus: fxbus_test.Shipped is declared both version 2 and version 3: its routes and subscriptions must agree`,
		`fxbus.Subscribe[fxbus_test.OrderPlaced]: Version must be 1 or more: got -1`,
	} {
		assert.ErrorContains(t, err, want)
	}

	// Under fx, AsUpcaster refuses a bad upcaster at once, and the chain's
	// errors fail fx.New.
	app := fx.New(fx.NopLogger, fxcqrs.Module, fxbus.Module,
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)))),
		fxbus.Route[Placed]("placed", fxbus.Version(3)),
		fxbus.AsUpcaster(fxbus.Upcaster{Name: "Placed", From: 2, Up: id}),
		fxbus.AsUpcaster(fxbus.Upcaster{Name: "Placed", From: 2, Up: id}),
	)
	require.ErrorContains(t, app.Err(), `fxbus.Upcaster "Placed": two upcasters from version 2`)
	app = fx.New(fx.NopLogger, fxbus.AsUpcaster(fxbus.Upcaster{Name: "Placed", From: 1}))
	require.ErrorContains(t, app.Err(), `fxbus.Upcaster "Placed" from version 1: Up is nil`)
	assert.False(t, errors.Is(app.Err(), context.Canceled))
}
