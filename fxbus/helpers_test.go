package fxbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The NATS client's and server's background goroutines outlive a
		// closed connection by a moment; they are named here, and only
		// these.
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).flusher"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
	)
}

// Events and commands of the tests.
type (
	OrderPlaced struct {
		ID    int    `json:"id"`
		Label string `json:"label"`
	}
	OrderPaid    struct{ ID int }
	Shipped      struct{ ID int }
	PlaceOrder   struct{ ID int }
	DomainEvent  interface{ OrderID() int }
	ShipmentLost struct{ ID int }
)

func (e OrderPlaced) OrderID() int  { return e.ID }
func (e ShipmentLost) OrderID() int { return e.ID }

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// topic returns a topic name of the test's own.
func topic(t testing.TB, base string) string {
	t.Helper()
	return fmt.Sprintf("%s_%d", base, rand.Uint64())
}

// inbox collects what a handler received.
type inbox[T any] struct {
	mu   sync.Mutex
	got  []T
	more chan struct{}
}

func newInbox[T any]() *inbox[T] { return &inbox[T]{more: make(chan struct{}, 1024)} }

func (b *inbox[T]) add(v T) {
	b.mu.Lock()
	b.got = append(b.got, v)
	b.mu.Unlock()
	b.more <- struct{}{}
}

func (b *inbox[T]) all() []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]T(nil), b.got...)
}

// wait waits until the inbox holds n items, for at most a generous bound
// (a broker may take its time; the bound only stops a broken test).
func (b *inbox[T]) wait(t testing.TB, n int) []T {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if got := b.all(); len(got) >= n {
			return got
		}
		select {
		case <-b.more:
		case <-deadline:
			t.Fatalf("waited for %d items, got %d: %v", n, len(b.all()), b.all())
		}
	}
}

// service starts an fx app with fxcqrs.Module and fxbus.Module over the
// given publisher and subscriber, stopped when the test ends, and returns
// its mediator.
func service(t testing.TB, pub message.Publisher, sub message.Subscriber, opts ...fx.Option) *fxcqrs.Mediator {
	t.Helper()
	var m *fxcqrs.Mediator
	app := fxtestApp(t, pub, sub, &m, opts...)
	t.Cleanup(app.RequireStop)
	return m
}

// fxtestApp starts such an app and returns it, for the test to stop.
func fxtestApp(t testing.TB, pub message.Publisher, sub message.Subscriber, m **fxcqrs.Mediator, opts ...fx.Option) *fxtest.App {
	t.Helper()
	all := []fx.Option{
		fx.NopLogger,
		fxcqrs.Module,
		fxbus.Module,
		fx.Populate(m),
	}
	if pub != nil {
		all = append(all, fx.Supply(fx.Annotate(pub, fx.As(new(message.Publisher)))))
	}
	if sub != nil {
		all = append(all, fx.Supply(fx.Annotate(sub, fx.As(new(message.Subscriber)))))
	}
	app := fxtest.New(t, append(all, opts...)...)
	app.RequireStart()
	return app
}

// deadLetters subscribes to a dead letter topic.
func deadLetters(t testing.TB, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	return ch
}
