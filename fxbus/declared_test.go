package fxbus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// strictBroker is a broker over a GoChannel that states a topic rule (no
// dot), provisions, consumes under a Flow, and writes down what the bus
// asked of it, in order.
type strictBroker struct {
	*gochannelPubSub
	failSubscribe error // Subscribe to failTopic fails with it, when set
	failTopic     string

	mu    sync.Mutex
	calls []string
	flows map[string]fxbus.Flow
}

type gochannelPubSub = struct {
	message.Publisher
	message.Subscriber
}

func newStrictBroker(t *testing.T) *strictBroker {
	gc := goChannel(t)
	return &strictBroker{gochannelPubSub: &gochannelPubSub{gc, gc}, flows: map[string]fxbus.Flow{}}
}

func (s *strictBroker) record(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, fmt.Sprintf(format, args...))
}

func (s *strictBroker) recorded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func (s *strictBroker) Capabilities() fxbus.Capabilities {
	return fxbus.Capabilities{Name: "strict", TopicRule: "no dot"}
}

func (s *strictBroker) CheckTopic(topic string) error {
	if strings.Contains(topic, ".") {
		return fmt.Errorf("strict: topic %q has a dot", topic)
	}
	return nil
}

func (s *strictBroker) Provision(_ context.Context, topics ...string) error {
	s.record("provision %s", strings.Join(topics, " "))
	return nil
}

func (s *strictBroker) SubscribeFlow(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	s.record("subscribe %s", topic)
	s.mu.Lock()
	s.flows[topic] = flow
	s.mu.Unlock()
	if s.failSubscribe != nil && topic == s.failTopic {
		return nil, s.failSubscribe
	}
	return s.Subscriber.Subscribe(ctx, topic)
}

// Subscribe fails as SubscribeFlow does.
func (s *strictBroker) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if s.failSubscribe != nil && topic == s.failTopic {
		return nil, s.failSubscribe
	}
	return s.Subscriber.Subscribe(ctx, topic)
}

func (s *strictBroker) Close() error { return nil }

// Every topic the bus declares (a route's, a subscription's, a dead
// letter's) is checked with the broker's rule when the bus is made: fx.New
// fails naming each topic the broker refuses, what declared it and the
// rule, all at once.
func TestTopicsAreCheckedWhenTheBusIsMade(t *testing.T) {
	t.Parallel()
	b := newStrictBroker(t)
	app := fx.New(fx.NopLogger, fxcqrs.Module, fxbus.Module,
		fx.Supply(fx.Annotate(b, fx.As(new(message.Publisher))), fx.Annotate(b, fx.As(new(message.Subscriber)))),
		fxbus.Route[OrderPlaced]("orders.placed"),
		fxbus.Subscribe[OrderPaid]("payments.confirmed", fxbus.DeadLetter("payments_dead")),
		fxbus.Subscribe[Shipped]("shipped", fxbus.DeadLetter("shipped.dead")),
		fxbus.Route[ShipmentLost]("fine"),
	)
	err := app.Err()
	require.Error(t, err)
	for _, want := range []string{
		`the route of fxbus_test.OrderPlaced declares the topic "orders.placed", which strict does not take (its topics: no dot)`,
		`the subscription of fxbus_test.OrderPaid declares the topic "payments.confirmed"`,
		`the dead letter of the subscription of fxbus_test.Shipped to "shipped" declares the topic "shipped.dead"`,
	} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotContains(t, err.Error(), `"fine"`)
	assert.Empty(t, b.recorded(), "nothing provisioned or subscribed")
}

// At start the bus provisions every declared topic, once on a broker that
// is both the publisher and the subscriber, before it subscribes; it
// subscribes through SubscribeFlow with the topic's InFlight and InOrder.
func TestStartProvisionsThenSubscribesUnderAFlow(t *testing.T) {
	t.Parallel()
	b := newStrictBroker(t)
	tp := topic(t, "payments")
	out := topic(t, "orders")
	service(t, b, b,
		fxbus.Route[OrderPlaced](out),
		fxbus.Subscribe[OrderPaid](tp, fxbus.InFlight(7), fxbus.InOrder()),
	)
	assert.Equal(t, []string{
		"provision " + out + " " + tp + " " + tp + "_poison",
		"subscribe " + tp,
	}, b.recorded())
	b.mu.Lock()
	defer b.mu.Unlock()
	assert.Equal(t, fxbus.Flow{InFlight: 7, InOrder: true}, b.flows[tp])
}

// A bus with routes only provisions them when it starts, though it
// consumes nothing, before any hook of a module that needs the bus (a
// relay, which publishes): a publisher started before its consumer finds
// its topics made.
func TestRouteOnlyBusProvisionsBeforeWhatNeedsIt(t *testing.T) {
	t.Parallel()
	b := newStrictBroker(t)
	out := topic(t, "orders")
	service(t, b, nil,
		fxbus.Route[OrderPlaced](out),
		fx.Invoke(func(lc fx.Lifecycle, _ *fxbus.Bus) {
			lc.Append(fx.Hook{OnStart: func(context.Context) error { b.record("relay starts"); return nil }})
		}),
	)
	assert.Equal(t, []string{"provision " + out, "relay starts"}, b.recorded())
}

// A subscription the broker refuses fails fx.Start with the broker's
// reason in the error, not only in a log line, and leaves nothing
// running (goleak checks, and the check costs no router close timeout):
// here the second of two topics, the first already subscribed.
func TestStartErrorCarriesTheSubscribeFailure(t *testing.T) {
	t.Parallel()
	b := newStrictBroker(t)
	b.failSubscribe = errors.New("invalid stream name")
	first, failing := topic(t, "a_orders"), topic(t, "z_payments")
	b.failTopic = failing
	app := fx.New(fx.NopLogger, fxcqrs.Module, fxbus.Module,
		fx.Supply(fx.Annotate(b, fx.As(new(message.Publisher))), fx.Annotate(b, fx.As(new(message.Subscriber)))),
		fxbus.Subscribe[OrderPlaced](first),
		fxbus.Subscribe[OrderPaid](failing),
	)
	require.NoError(t, app.Err())
	err := app.Start(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid stream name")
	assert.Contains(t, err.Error(), failing)
	assert.Equal(t, []string{"subscribe " + first, "subscribe " + failing}, b.recorded()[1:], "the first was subscribed, then ended")
	require.NoError(t, app.Stop(context.Background()))
}

// A bus made with New and started without fx provisions too, once.
func TestStartProvisionsOnce(t *testing.T) {
	t.Parallel()
	b := newStrictBroker(t)
	out := topic(t, "orders")
	bus, err := fxbus.New(fxbus.Config{Publisher: b}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced](out)}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(bus))
	require.NoError(t, err)
	require.NoError(t, bus.Provision(context.Background()))
	require.NoError(t, bus.Start(context.Background(), m))
	require.NoError(t, bus.Stop(context.Background()))
	require.NoError(t, m.Stop(context.Background()))
	assert.Equal(t, []string{"provision " + out}, b.recorded())
}
