package fxbus_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	fxbus "github.com/fxcqrs/fxcqrs/bus"
	"github.com/stretchr/testify/require"
)

// brokenSubscriber panics when the router subscribes.
type brokenSubscriber struct{ message.Subscriber }

func (brokenSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	panic("the subscriber broke")
}

// A panic on the router's goroutine does not take the process down: Start
// says the router stopped.
func TestRouterPanicStopsTheBusNotTheProcess(t *testing.T) {
	t.Parallel()
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	b, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: brokenSubscriber{gc}}, nil,
		[]fxbus.Subscription{fxbus.NewSubscription[OrderPlaced]("orders")})
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{})
	require.NoError(t, err)
	require.ErrorContains(t, b.Start(context.Background(), m), "the router stopped before it ran")
	require.NoError(t, b.Stop(context.Background()))
}
