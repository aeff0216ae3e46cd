package amqpbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// record (in Redis) is a handled effect, once per message id (what an inbox does),
// appended to its key's list in the order handled.
var record = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], ARGV[1], 1) == 1 then
  redis.call('RPUSH', KEYS[2] .. ARGV[2], ARGV[3])
end
return 1`)

const killKeys, killPerRound, killRounds = 8, 120, 6

// A consumer SIGKILLed, or stopped cleanly, at seeded moments while keyed
// messages flow, and started again: each message's effect is recorded
// once, none is lost, and each key's effects are in order.
func TestKillAndRestartKeepOrder(t *testing.T) {
	t.Parallel()
	addr := amqpURL(t)
	tp := topic(t, addr, "billing")
	raddr := brokertest.Address(t, "FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
	run := tp + ":effects"
	c := redis.NewClient(&redis.Options{Addr: raddr})
	t.Cleanup(func() {
		keys := []string{run}
		for k := range killKeys {
			keys = append(keys, run+":"+strconv.Itoa(k))
		}
		_ = c.Del(context.Background(), keys...).Err()
		_ = c.Close()
	})
	ps := newPubSub(t, amqpbus.Config{URL: addr, Group: "billing"})
	require.NoError(t, ps.ProvisionConsumer(context.Background(), tp))
	seed := rand.Uint64()
	if s, err := strconv.ParseUint(os.Getenv("FXCQRS_CRASH_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (FXCQRS_CRASH_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	effects := func() int64 { n, _ := c.HLen(context.Background(), run).Result(); return n }
	seq := 0
	for round := range killRounds + 1 {
		child := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.v")
		child.Env = append(os.Environ(), "FXCQRS_KILL_TOPIC="+tp, "FXCQRS_KILL_ADDR="+addr, "FXCQRS_KILL_REDIS="+raddr)
		child.Stdout, child.Stderr = os.Stderr, os.Stderr
		require.NoError(t, child.Start())
		for range killPerRound {
			k := seq % killKeys
			m := message.NewMessage(fmt.Sprintf("m-%05d", seq), nil)
			m.Metadata.Set(fxbus.MetadataKey, strconv.Itoa(k))
			m.Metadata.Set("seq", strconv.Itoa(seq/killKeys))
			require.NoError(t, ps.Publish(tp, m))
			seq++
		}
		if round == killRounds { // the last one drains
			require.Eventually(t, func() bool { return effects() == int64(seq) }, time.Minute, 10*time.Millisecond)
			require.NoError(t, child.Process.Signal(syscall.SIGTERM))
			_ = child.Wait()
			break
		}
		// Killed or stopped once it has handled part of what is there.
		at := int64(seq - killPerRound + rng.IntN(killPerRound))
		require.Eventually(t, func() bool { return effects() >= at }, time.Minute, 5*time.Millisecond)
		sig := syscall.SIGKILL
		if rng.IntN(2) == 0 {
			sig = syscall.SIGTERM
		}
		t.Logf("round %d: %v after %d effects", round, sig, at)
		require.NoError(t, child.Process.Signal(sig))
		_ = child.Wait()
	}
	wrong := 0
	for k := range killKeys {
		got, err := c.LRange(context.Background(), run+":"+strconv.Itoa(k), 0, -1).Result()
		require.NoError(t, err)
		assert.Len(t, got, seq/killKeys, "key %d: lost", k)
		for i := 1; i < len(got); i++ {
			a, _ := strconv.Atoi(got[i-1])
			b, _ := strconv.Atoi(got[i])
			if b < a {
				wrong++
			}
		}
	}
	assert.Zero(t, wrong, "wrong-order pairs")
}

// TestKillChild is the consumer TestKillAndRestartKeepOrder runs and kills.
func TestKillChild(t *testing.T) {
	tp := os.Getenv("FXCQRS_KILL_TOPIC")
	if tp == "" {
		t.Skip("started by TestKillAndRestartKeepOrder only")
	}
	addr := os.Getenv("FXCQRS_KILL_ADDR")
	ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "billing"})
	require.NoError(t, err)
	c := redis.NewClient(&redis.Options{Addr: os.Getenv("FXCQRS_KILL_REDIS")})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 8, InOrder: true})
	require.NoError(t, err)
	run := tp + ":effects"
	for m := range ch {
		go func() { // handlers run in parallel, as the bus's do
			err := record.Run(context.Background(), c, []string{run, run + ":"}, m.UUID, m.Metadata.Get(fxbus.MetadataKey), m.Metadata.Get("seq")).Err()
			if err != nil {
				m.Nack()
				return
			}
			m.Ack()
		}()
	}
	require.NoError(t, ps.Close())
	require.NoError(t, c.Close())
}
