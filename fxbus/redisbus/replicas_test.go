package redisbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// laneTopic is a topic of the test's own with lanes: its streams, its
// record of lanes and its leases deleted when it ends.
func laneTopic(t *testing.T, addr string, lanes int) string {
	t.Helper()
	tp := fmt.Sprintf("redisbus_lanes_%d", rand.Uint64())
	t.Cleanup(func() {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		keys := []string{tp, "fxcqrs:lanes:" + tp, "fxcqrs:own:" + tp + ":svc"}
		for n := 1; n < lanes; n++ {
			keys = append(keys, fmt.Sprintf("%s._lane.%d", tp, n))
		}
		_ = c.Del(context.Background(), keys...).Err()
	})
	return tp
}

// Replicas share a topic's lanes, each lane's stream read by one replica
// at a time (brokertest.LanesAcrossReplicas): a killed one's pending
// entries, under the lane's one consumer name, are read first by the
// lane's next owner.
func TestLanesAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds; not with -short")
	}
	t.Parallel()
	addr := redisAddr(t)
	tp := laneTopic(t, addr, 8)
	cfg := redisbus.Config{Addr: addr, Group: "svc", Lanes: 8}
	pub, err := redisbus.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	require.NoError(t, pub.Provision(context.Background(), tp))
	brokertest.LanesAcrossReplicas(t, brokertest.Replicas{
		Topic: tp, Publish: pub.Publish,
		Start: func(t *testing.T, name string) brokertest.Replica {
			c := cfg
			c.Consumer = name
			ps, err := redisbus.New(c)
			require.NoError(t, err)
			return brokertest.Replica{Subscriber: ps, Kill: func() { redisbus.Kill(ps) }, Close: ps.Close}
		},
	})
}

// Every producer and consumer of a topic uses one number of lanes.
func TestAnotherNumberOfLanesIsRefused(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := laneTopic(t, addr, 8)
	eight, err := redisbus.New(redisbus.Config{Addr: addr, Group: "svc", Lanes: 8})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, eight.Close()) })
	require.NoError(t, eight.Provision(context.Background(), tp))
	four, err := redisbus.New(redisbus.Config{Addr: addr, Group: "svc", TopicLanes: map[string]int{tp: 4}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, four.Close()) })
	err = four.Provision(context.Background(), tp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "has 8 lanes")
	_, err = four.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 1, InOrder: true})
	assert.Error(t, err, "nor does it consume")
	one, err := redisbus.New(redisbus.Config{Addr: addr, Group: "svc"}) // one lane: not recorded, but checked
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, one.Close()) })
	err = one.Provision(context.Background(), tp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "configured with 1")
}
