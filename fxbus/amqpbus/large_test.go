package amqpbus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// Big is an event of about 20 MB; SendBig emits one.
type (
	Big     struct{ Blob string }
	SendBig struct{ Blob string }
)

type sendBig func(context.Context, SendBig) error

func (h sendBig) Handle(ctx context.Context, c SendBig) error { return h(ctx, c) }

type handleBig func(context.Context, Big) error

func (h handleBig) Handle(ctx context.Context, e Big) error { return h(ctx, e) }

// A 20 MB event goes through the bus on RabbitMQ: published, confirmed,
// delivered, decoded, handled and acknowledged (the deadline is generous;
// nothing here is timed).
func TestLargeEventThroughTheBus(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "big")
	handled := make(chan int, 1)
	var m *fxcqrs.Mediator
	app := fx.New(fx.NopLogger,
		fxcqrs.Module, fxbus.Module,
		amqpbus.Module(amqpbus.Config{URL: addr, Group: "big"}),
		fxbus.Route[Big](tp),
		fxbus.Subscribe[Big](tp),
		fxcqrs.AsCommandHandler(func() sendBig {
			return func(ctx context.Context, c SendBig) error {
				fxcqrs.Emit(ctx, Big(c))
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() handleBig {
			return func(ctx context.Context, e Big) error {
				if fxbus.MessageID(ctx) != "" {
					handled <- len(e.Blob)
				}
				return nil
			}
		}),
		fx.Populate(&m),
	)
	require.NoError(t, app.Err())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	require.NoError(t, app.Start(ctx))
	defer func() { require.NoError(t, app.Stop(context.Background())) }()
	blob := strings.Repeat("0123456789", 2<<20) // 20 MiB
	start := time.Now()
	require.NoError(t, fxcqrs.Exec(ctx, m, SendBig{Blob: blob}))
	t.Logf("published in %v", time.Since(start))
	select {
	case n := <-handled:
		t.Logf("handled after %v", time.Since(start))
		require.Equal(t, len(blob), n)
	case <-ctx.Done():
		t.Fatal("the 20 MB event was not handled within 5 minutes")
	}
}
