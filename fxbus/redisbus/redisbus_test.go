package redisbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// go-redis retries a failed dial on a goroutine that sleeps a second
// before it sees its pool closed (the suite cuts connections).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// redisAddr is the Redis server the tests use (see brokertest.Address).
func redisAddr(t testing.TB) string {
	return brokertest.Address(t, "FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
}

// topic is a stream of the test's own, deleted when it ends.
func topic(t testing.TB, addr string) string {
	t.Helper()
	tp := fmt.Sprintf("redisbus_%d", rand.Uint64())
	t.Cleanup(func() {
		c := redis.NewClient(&redis.Options{Addr: addr})
		_ = c.Del(context.Background(), tp).Err()
		_ = c.Close()
	})
	return tp
}

func pubsub(t testing.TB, addr, group string) *redisbus.PubSub {
	t.Helper()
	return pubsubAs(t, addr, group, "")
}

// pubsubAs is a replica of group named consumer ("": the default).
func pubsubAs(t testing.TB, addr, group, consumer string) *redisbus.PubSub {
	t.Helper()
	ps, err := redisbus.New(redisbus.Config{Addr: addr, Group: group, Consumer: consumer})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close()) })
	return ps
}

func next(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(time.Minute):
		t.Fatal("no message within a minute")
		return nil
	}
}

// What was published before the service first subscribed arrives (its
// group reads from the first entry), with its id and metadata; a nacked
// message comes again.
func TestPublishBeforeSubscribe(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	ps := pubsub(t, addr, "billing")
	require.NoError(t, ps.Provision(context.Background(), tp))
	m := message.NewMessage("r-1", []byte("early"))
	m.Metadata.Set("name", "OrderPlaced")
	require.NoError(t, ps.Publish(tp, m))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.Subscribe(ctx, tp)
	require.NoError(t, err)
	got := next(t, ch)
	assert.Equal(t, "r-1", got.UUID)
	assert.Equal(t, "early", string(got.Payload))
	assert.Equal(t, "OrderPlaced", got.Metadata.Get("name"))
	got.Nack()
	again := next(t, ch)
	assert.Equal(t, "r-1", again.UUID)
	again.Ack()
}

// Two replicas of one group share the stream: each message reaches one.
func TestReplicasShareAGroup(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	a, b := pubsubAs(t, addr, "billing", "billing-a"), pubsubAs(t, addr, "billing", "billing-b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chA, err := a.Subscribe(ctx, tp)
	require.NoError(t, err)
	chB, err := b.Subscribe(ctx, tp)
	require.NoError(t, err)
	const n = 40
	for i := range n {
		require.NoError(t, a.Publish(tp, message.NewMessage("s-"+strconv.Itoa(i), []byte("x"))))
	}
	seen := map[string]int{}
	for len(seen) < n {
		var m *message.Message
		select {
		case m = <-chA:
		case m = <-chB:
		case <-time.After(time.Minute):
			t.Fatalf("received %d of %d", len(seen), n)
		}
		seen[m.UUID]++
		m.Ack()
	}
	for id, c := range seen {
		assert.Equal(t, 1, c, id)
	}
}

// An unreachable server fails New, naming it.
func TestUnreachableFailsNew(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	_, err = redisbus.New(redisbus.Config{Addr: addr, Group: "billing"})
	require.ErrorContains(t, err, "Redis at "+addr+" cannot be reached")
}
