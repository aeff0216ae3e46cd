package redisbus_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/stretchr/testify/require"
)

// A consumer SIGKILLed, or stopped cleanly, at seeded moments while keyed
// messages flow, and started again: each message's effect is recorded
// once, none is lost, and each key's effects are in order.
func TestKillAndRestartKeepOrder(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	ps := pubsubAs(t, addr, "billing", "billing-0")
	require.NoError(t, ps.Provision(context.Background(), tp))
	brokertest.KillAndRestart(t, brokertest.Kill{Topic: tp, Addr: addr, Redis: addr, Publish: ps.Publish})
}

// TestKillChild is the consumer TestKillAndRestartKeepOrder runs and kills.
func TestKillChild(t *testing.T) {
	brokertest.KillChild(t, func(ctx context.Context, addr, tp string) (<-chan *message.Message, io.Closer) {
		ps, err := redisbus.New(redisbus.Config{Addr: addr, Group: "billing", Consumer: "billing-0", MaxIdleTime: time.Hour})
		require.NoError(t, err)
		ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 8, InOrder: true})
		require.NoError(t, err)
		return ch, ps
	})
}
