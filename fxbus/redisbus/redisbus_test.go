package redisbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/redis/go-redis/v9"
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
