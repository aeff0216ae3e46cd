package amqpbus_test

import (
	"context"
	"io"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/stretchr/testify/require"
)

// A consumer SIGKILLed, or stopped cleanly, at seeded moments while keyed
// messages flow, and started again: each message's effect is recorded
// once, none is lost, and each key's effects are in order.
func TestKillAndRestartKeepOrder(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "billing")
	raddr := brokertest.Address(t, "FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
	ps := newPubSub(t, amqpbus.Config{URL: addr, Group: "billing"})
	require.NoError(t, ps.ProvisionConsumer(context.Background(), tp))
	brokertest.KillAndRestart(t, brokertest.Kill{Topic: tp, Addr: addr, Redis: raddr, Publish: ps.Publish})
}

// TestKillChild is the consumer TestKillAndRestartKeepOrder runs and kills.
func TestKillChild(t *testing.T) {
	brokertest.KillChild(t, func(ctx context.Context, addr, tp string) (<-chan *message.Message, io.Closer) {
		ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "billing"})
		require.NoError(t, err)
		ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 8, InOrder: true})
		require.NoError(t, err)
		return ch, ps
	})
}
