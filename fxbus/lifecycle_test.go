package fxbus_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// One GoChannel shared by two applications, as examples/bus does:
// stopping one leaves the other consuming, since a bus never closes a
// subscriber it was given.
func TestStopLeavesAGivenSubscriberOpen(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "orders")
	first, second := newInbox[OrderPlaced](), newInbox[OrderPlaced]()
	stopped := fxtestApp(t, gc, gc, new(*fxcqrs.Mediator),
		fxbus.Subscribe[OrderPlaced](tp),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(_ context.Context, e OrderPlaced) error { first.add(e); return nil }
		}))
	service(t, gc, gc,
		fxbus.Subscribe[OrderPlaced](tp+"_other"),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(_ context.Context, e OrderPlaced) error { second.add(e); return nil }
		}))
	stopped.RequireStop()

	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"ID":7}`))
	msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
	require.NoError(t, gc.Publish(tp+"_other", msg), "the GoChannel is still open")
	assert.Equal(t, []OrderPlaced{{ID: 7}}, second.wait(t, 1))
}

// gate is an event handler that holds every message until released, and
// counts how many it holds at once.
type gate struct {
	mu      sync.Mutex
	held    int
	most    int
	entered chan struct{}
	release chan struct{}
	handled atomic.Int32
}

func (g *gate) Handle(context.Context, OrderPlaced) error {
	g.mu.Lock()
	g.held++
	g.most = max(g.most, g.held)
	g.mu.Unlock()
	g.entered <- struct{}{}
	<-g.release
	g.mu.Lock()
	g.held--
	g.mu.Unlock()
	g.handled.Add(1)
	return nil
}

// At most InFlight messages are between delivery and their ack: the
// others wait in the broker, and every one is handled in the end. With the
// mediator at limit 1 and the bound at 1, nothing deadlocks.
func TestInFlightIsBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		limit  int
		bound  int
		expect int // the most messages held by handlers at once
	}{
		{"limit 1, bound 1", 1, 1, 1},
		{"limit 8, bound 3", 8, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gc := goChannel(t)
			tp := topic(t, "burst")
			g := &gate{entered: make(chan struct{}, 100), release: make(chan struct{})}
			service(t, gc, gc,
				fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: tc.limit}}),
				fxbus.Subscribe[OrderPlaced](tp, fxbus.InFlight(tc.bound)),
				fxcqrs.AsEventHandler(func() *gate { return g }),
			)
			const n = 50
			for i := range n {
				msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"ID":%d}`, i))
				msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
				require.NoError(t, gc.Publish(tp, msg))
			}
			for range tc.expect { // the bound's worth of messages reach the handler
				<-g.entered
			}
			close(g.release)
			for range n - tc.expect {
				<-g.entered
			}
			require.Eventually(t, func() bool { return g.handled.Load() == n }, time.Minute, time.Millisecond)
			g.mu.Lock()
			defer g.mu.Unlock()
			assert.LessOrEqual(t, g.most, tc.bound, "never more held than the bound")
			assert.Equal(t, tc.expect, g.most)
		})
	}
}

// Every dead letter leaves a line at warn level with its topic, id and
// reason.
func TestDeadLetterIsLogged(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "garbled")
	dead := deadLetters(t, gc, tp+"_poison")
	core, logs := observer.New(zapcore.WarnLevel)
	service(t, gc, gc, fx.Supply(zap.New(core)), fxbus.Subscribe[OrderPlaced](tp))
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"ID": "not a number"`))
	require.NoError(t, gc.Publish(tp, msg))
	(<-dead).Ack()
	lines := logs.FilterMessage("message goes to the dead letter topic").All()
	require.Len(t, lines, 1)
	fields := lines[0].ContextMap()
	assert.Equal(t, tp, fields["topic"])
	assert.Equal(t, msg.UUID, fields["messageId"])
	assert.Contains(t, fields["error"], "malformed message")
}

// A bus on the in-process broker that has stopped refuses to publish,
// with an error, not a panic: the mediator stops after the bus and may
// still forward.
func TestStoppedEmbeddedBusRefuses(t *testing.T) {
	t.Parallel()
	b, err := fxbus.New(fxbus.Config{}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced](topic(t, "late"))}, nil)
	require.NoError(t, err)
	require.NoError(t, b.Stop(context.Background()))
	err = b.Forward(context.Background(), []any{OrderPlaced{ID: 1}})
	require.ErrorContains(t, err, "this bus has stopped")
}

// A message whose context ended before its handlers ran (a broker ends
// its messages' contexts with their subscription's, as the bus stops) is
// nacked for redelivery, not sent to the dead letter with "context
// canceled".
func TestMessageWithEndedContextIsRedelivered(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	in := make(chan *message.Message, 1)
	tp := topic(t, "ended")
	var bus *fxbus.Bus
	service(t, gc, &oneChannel{ch: in, topic: tp, Subscriber: gc}, fx.Populate(&bus),
		fxbus.Subscribe[OrderPlaced](tp),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(context.Context, OrderPlaced) error { return nil }
		}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"id":1}`))
	msg.SetContext(ctx)
	in <- msg
	select {
	case <-msg.Nacked():
	case <-msg.Acked():
		t.Fatal("acknowledged: sent to the dead letter")
	case <-time.After(time.Minute):
		t.Fatal("neither acknowledged nor nacked")
	}
	assert.Zero(t, bus.Stats().DeadLettered)
	assert.Equal(t, uint64(1), bus.Stats().Redelivered)
}

// oneChannel hands over what comes on ch for topic, until the
// subscription's context ends, and subscribes other topics through the
// Subscriber.
type oneChannel struct {
	message.Subscriber
	ch    chan *message.Message
	topic string
}

func (s *oneChannel) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == s.topic {
		out := make(chan *message.Message)
		go func() {
			defer close(out)
			for {
				select {
				case msg := <-s.ch:
					select {
					case out <- msg:
					case <-ctx.Done():
						msg.Nack()
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
		return out, nil
	}
	return s.Subscriber.Subscribe(ctx, topic)
}

func (s *oneChannel) Close() error { return nil }
