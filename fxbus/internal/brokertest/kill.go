package brokertest

import (
	"context"
	"fmt"
	"io"
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

// Kill is what KillAndRestart needs of a broker: the topic (provisioned
// already), the broker's address the child is given, the Redis the child
// records its effects in, and how to publish.
type Kill struct {
	Topic   string
	Addr    string
	Redis   string
	Publish func(topic string, msgs ...*message.Message) error
}

// KillAndRestart runs the test binary's TestKillChild (which calls
// KillChild) as a child process, SIGKILLs it or stops it cleanly at
// seeded moments while keyed messages flow, and starts it again; then it
// asserts each message's effect was recorded once, none is lost, and each
// key's effects are in order. FXCQRS_CRASH_SEED replays a run.
func KillAndRestart(t *testing.T, k Kill) {
	t.Helper()
	run := k.Topic + ":effects"
	c := redis.NewClient(&redis.Options{Addr: k.Redis})
	t.Cleanup(func() {
		keys := []string{run}
		for key := range killKeys {
			keys = append(keys, run+":"+strconv.Itoa(key))
		}
		_ = c.Del(context.Background(), keys...).Err()
		_ = c.Close()
	})
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
		child.Env = append(os.Environ(), "FXCQRS_KILL_TOPIC="+k.Topic, "FXCQRS_KILL_ADDR="+k.Addr, "FXCQRS_KILL_REDIS="+k.Redis)
		child.Stdout, child.Stderr = os.Stderr, os.Stderr
		require.NoError(t, child.Start())
		for range killPerRound {
			m := message.NewMessage(fmt.Sprintf("m-%05d", seq), nil)
			m.Metadata.Set(fxbus.MetadataKey, strconv.Itoa(seq%killKeys))
			m.Metadata.Set("seq", strconv.Itoa(seq/killKeys))
			require.NoError(t, k.Publish(k.Topic, m))
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
	for key := range killKeys {
		got, err := c.LRange(context.Background(), run+":"+strconv.Itoa(key), 0, -1).Result()
		require.NoError(t, err)
		assert.Len(t, got, seq/killKeys, "key %d: lost", key)
		wrong += wrongOrder(got)
	}
	assert.Zero(t, wrong, "wrong-order pairs")
}

// wrongOrder counts the neighbours in seqs where a later sequence number
// comes first.
func wrongOrder(seqs []string) int {
	wrong := 0
	for i := 1; i < len(seqs); i++ {
		a, _ := strconv.Atoi(seqs[i-1])
		b, _ := strconv.Atoi(seqs[i])
		if b < a {
			wrong++
		}
	}
	return wrong
}

// KillChild is the consumer KillAndRestart runs and kills; a test binary's
// TestKillChild calls it, and it skips t when the test was not started
// that way. subscribe opens the broker at addr and subscribes to topic
// until ctx (ended by SIGTERM) ends; KillChild records each message's
// effect, handlers in parallel as the bus's run, then closes closer.
func KillChild(t *testing.T, subscribe func(ctx context.Context, addr, topic string) (<-chan *message.Message, io.Closer)) {
	t.Helper()
	tp := os.Getenv("FXCQRS_KILL_TOPIC")
	if tp == "" {
		t.Skip("started by TestKillAndRestartKeepOrder only")
	}
	c := redis.NewClient(&redis.Options{Addr: os.Getenv("FXCQRS_KILL_REDIS")})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ch, closer := subscribe(ctx, os.Getenv("FXCQRS_KILL_ADDR"), tp)
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
	require.NoError(t, closer.Close())
	require.NoError(t, c.Close())
}
