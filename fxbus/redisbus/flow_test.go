package redisbus_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func publishN(t testing.TB, ps *redisbus.PubSub, tp, prefix string, n int) {
	t.Helper()
	for i := range n {
		require.NoError(t, ps.Publish(tp, message.NewMessage(fmt.Sprintf("%s-%02d", prefix, i), nil)))
	}
}

// InFlight entries are handed over before the first is acknowledged
// (watermill-redisstream handed over one and waited for its ack), and
// no more: the process holds at most InFlight.
func TestInFlightHandedOverBeforeAcks(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	ps := pubsubAs(t, addr, "billing", "billing-0")
	require.NoError(t, ps.Provision(context.Background(), tp))
	publishN(t, ps, tp, "p", 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 16})
	require.NoError(t, err)
	var held []*message.Message
	for range 16 {
		held = append(held, next(t, ch))
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	pending, err := c.XPending(context.Background(), tp, "billing").Result()
	require.NoError(t, err)
	assert.EqualValues(t, 16, pending.Count, "read no more than InFlight")
	for i, m := range held {
		assert.Equal(t, fmt.Sprintf("p-%02d", i), m.UUID)
		m.Ack()
	}
	for i := 16; i < 20; i++ {
		assert.Equal(t, fmt.Sprintf("p-%02d", i), next(t, ch).UUID)
	}
}

// An entry watermill-redisstream wrote (what a deployment's streams hold
// when it upgrades) is read with its id and metadata.
func TestReadsWatermillRedisstreamEntries(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	ps := pubsubAs(t, addr, "billing", "billing-0")
	require.NoError(t, ps.Provision(context.Background(), tp))
	c := redis.NewClient(&redis.Options{Addr: addr})
	old, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: c}, watermill.NopLogger{})
	require.NoError(t, err)
	m := message.NewMessage("old-1", []byte(`{"a":1}`))
	m.Metadata.Set("name", "OrderPlaced")
	m.Metadata.Set(fxbus.MetadataKey, "k1")
	require.NoError(t, old.Publish(tp, m))
	require.NoError(t, old.Close()) // closes c

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 4, InOrder: true})
	require.NoError(t, err)
	got := next(t, ch)
	assert.Equal(t, "old-1", got.UUID)
	assert.Equal(t, `{"a":1}`, string(got.Payload))
	assert.Equal(t, message.Metadata{"name": "OrderPlaced", fxbus.MetadataKey: "k1"}, got.Metadata)
	got.Ack()
}

func TestCheckTopic(t *testing.T) {
	t.Parallel()
	ps := pubsub(t, redisAddr(t), "billing")
	require.NoError(t, ps.CheckTopic("payments.confirmed"))
	for _, bad := range []string{"", "a b", "a\nb", strings.Repeat("a", 1025)} {
		err := ps.CheckTopic(bad)
		require.Error(t, err, bad)
		assert.ErrorContains(t, err, "no spaces")
	}
}

// A replica that stopped holding entries (closed without acknowledging,
// as a killed one leaves them) takes them back first when it starts
// again under its name, in stream order; another consumer takes a dead
// one's after MaxIdleTime.
func TestRestartResumesPendingFirst(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	first, err := redisbus.New(redisbus.Config{Addr: addr, Group: "billing", Consumer: "billing-0"})
	require.NoError(t, err)
	require.NoError(t, first.Provision(context.Background(), tp))
	publishN(t, first, tp, "r", 20)
	ch, err := first.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 8})
	require.NoError(t, err)
	for i := range 8 {
		m := next(t, ch)
		if i%3 == 0 {
			m.Ack() // 0, 3, 6 handled; the others held when it dies
		}
	}
	require.NoError(t, first.Close())

	again := pubsubAs(t, addr, "billing", "billing-0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err = again.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 8})
	require.NoError(t, err)
	var got []string
	for range 17 {
		m := next(t, ch)
		got = append(got, m.UUID)
		if len(got) == 3 { // a replica of another name takes nothing yet
			break
		}
		m.Ack()
	}
	assert.Equal(t, []string{"r-01", "r-02", "r-04"}, got)
	cancel()
	// Close waits for the XACKs of r-01 and r-02, which run after Ack
	// returns: without it the other replica could claim one of them first
	// and see it again.
	require.NoError(t, again.Close())

	// The restarted one dies too, holding r-04 and up to seven more; a
	// replica of another name claims them once idle (1 ms here), and only
	// them: what was acknowledged stays acknowledged.
	other, err := redisbus.New(redisbus.Config{Addr: addr, Group: "billing", Consumer: "billing-1", MaxIdleTime: time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, other.Close()) })
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	ch2, err := other.SubscribeFlow(ctx2, tp, fxbus.Flow{InFlight: 8})
	require.NoError(t, err)
	seen := map[string]bool{}
	for len(seen) < 20-5 {
		m := next(t, ch2)
		seen[m.UUID] = true
		m.Ack()
	}
	want := map[string]bool{}
	for i := range 20 {
		if i != 0 && i != 1 && i != 2 && i != 3 && i != 6 {
			want[fmt.Sprintf("r-%02d", i)] = true
		}
	}
	assert.Equal(t, want, seen)
}

// Replicas on one host take names of their own by default; a replica
// started again after a clean stop takes its name back; a name a live
// process holds is refused.
func TestConsumerNames(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	group := fmt.Sprintf("names-%d", time.Now().UnixNano())
	subscribe := func(ps *redisbus.PubSub) error {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		_, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 1})
		return err
	}
	first, err := redisbus.New(redisbus.Config{Addr: addr, Group: group})
	require.NoError(t, err)
	require.NoError(t, subscribe(first))
	second := pubsub(t, addr, group)
	require.NoError(t, subscribe(second))
	assert.NotEqual(t, first.Consumer(tp), second.Consumer(tp))
	assert.Equal(t, first.Consumer(tp)+"-1", second.Consumer(tp))
	name := first.Consumer(tp)
	require.NoError(t, first.Close())
	again := pubsub(t, addr, group)
	require.NoError(t, subscribe(again))
	assert.Equal(t, name, again.Consumer(tp))

	clash, err := redisbus.New(redisbus.Config{Addr: addr, Group: group, Consumer: name})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, clash.Close()) })
	err = subscribe(clash)
	require.ErrorContains(t, err, fmt.Sprintf("the consumer name %q (Config.Consumer) is in use on %s by another live process", name, tp))
}

// What a subscription holds is claimed again now and then, which resets
// its idle time: a handler that runs longer than MaxIdleTime keeps its
// entry, instead of another replica claiming it.
func TestHeldEntriesStayFresh(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	ps := pubsubAs(t, addr, "billing", "billing-0")
	require.NoError(t, ps.Provision(context.Background(), tp))
	publishN(t, ps, tp, "f", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 1})
	require.NoError(t, err)
	m := next(t, ch) // a handler that runs long
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	idle := func() time.Duration {
		p, err := c.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: tp, Group: "billing", Start: "-", End: "+", Count: 1}).Result()
		require.NoError(t, err)
		require.Len(t, p, 1)
		return p[0].Idle
	}
	// As if it had been held for an hour.
	require.NoError(t, c.Do(context.Background(), "XCLAIM", tp, "billing", "billing-0", 0, idle0ID(t, c, tp), "IDLE", time.Hour.Milliseconds(), "JUSTID").Err())
	require.GreaterOrEqual(t, idle(), time.Hour)
	redisbus.KeepHeld(ps)
	assert.Less(t, idle(), time.Hour)
	m.Ack()
}

func idle0ID(t *testing.T, c *redis.Client, tp string) string {
	t.Helper()
	xs, err := c.XRange(context.Background(), tp, "-", "+").Result()
	require.NoError(t, err)
	return xs[0].ID
}

// What a replica that stopped left pending (its name is free) is claimed
// at once by another, before new entries, not after MaxIdleTime.
func TestStoppedReplicasEntriesClaimedAtOnce(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	tp := topic(t, addr)
	stopped, err := redisbus.New(redisbus.Config{Addr: addr, Group: "billing", Consumer: "billing-a", MaxIdleTime: time.Hour})
	require.NoError(t, err)
	require.NoError(t, stopped.Provision(context.Background(), tp))
	publishN(t, stopped, tp, "o", 6)
	ch, err := stopped.SubscribeFlow(context.Background(), tp, fxbus.Flow{InFlight: 4})
	require.NoError(t, err)
	for range 4 {
		_ = next(t, ch) // held when it stops
	}
	require.NoError(t, stopped.Close())

	other, err := redisbus.New(redisbus.Config{Addr: addr, Group: "billing", Consumer: "billing-b", MaxIdleTime: time.Hour})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, other.Close()) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err = other.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 8})
	require.NoError(t, err)
	for i := range 6 {
		m := next(t, ch)
		assert.Equal(t, fmt.Sprintf("o-%02d", i), m.UUID)
		m.Ack()
	}
}
