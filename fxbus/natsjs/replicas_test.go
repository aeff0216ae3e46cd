package natsjs_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Replicas share a topic's lanes, each lane consumed through a durable
// consumer of its own, remade from its ack floor by each new owner
// (brokertest.LanesAcrossReplicas).
func TestLanesAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds; not with -short")
	}
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "replicas")
	cfg := natsjs.Config{URL: addr, Group: "svc", Lanes: 8}
	pub, err := natsjs.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	require.NoError(t, pub.Provision(context.Background(), tp))
	brokertest.LanesAcrossReplicas(t, brokertest.Replicas{
		Topic: tp, Publish: pub.Publish,
		Start: func(t *testing.T, name string) brokertest.Replica {
			c := cfg
			c.Member = name
			ps, err := natsjs.New(c)
			require.NoError(t, err)
			return brokertest.Replica{Subscriber: ps, Kill: func() { natsjs.Kill(ps) }, Close: ps.Close}
		},
	})
}

// Every producer and consumer of a topic uses one number of lanes: a
// PubSub configured with another is refused when it provisions the topic.
func TestAnotherNumberOfLanesIsRefused(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "lanes_mismatch")
	eight, err := natsjs.New(natsjs.Config{URL: addr, Group: "svc", Lanes: 8})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, eight.Close()) })
	require.NoError(t, eight.Provision(context.Background(), tp))
	four, err := natsjs.New(natsjs.Config{URL: addr, Group: "svc", TopicLanes: map[string]int{tp: 4}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, four.Close()) })
	err = four.Provision(context.Background(), tp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "has 8 lanes")
	assert.Contains(t, err.Error(), "configured with 4")
	_, err = four.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 1, InOrder: true})
	assert.Error(t, err, "nor does it consume")
	one, err := natsjs.New(natsjs.Config{URL: addr, Group: "svc"}) // one lane: not recorded, but checked
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, one.Close()) })
	err = one.Provision(context.Background(), tp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "configured with 1")
}
