package redisbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handlings is what replicas in one process handled: an inbox shared by
// them (a message handled once is skipped when it comes again, as
// fxoutbox's inbox does), each key's handlings in order, who handles a
// key at the moment, and per replica how many.
type handlings struct {
	mu       sync.Mutex
	inbox    map[string]bool
	byKey    map[string][]int
	busy     map[string]string
	twoAtOne int
	count    map[string]int
	keysOf   map[string]string
}

func newHandlings() *handlings {
	return &handlings{inbox: map[string]bool{}, byKey: map[string][]int{}, busy: map[string]string{}, count: map[string]int{}, keysOf: map[string]string{}}
}

type replica struct {
	name   string
	ps     *redisbus.PubSub
	cancel context.CancelFunc
	dead   chan struct{}
	done   sync.WaitGroup
}

func startReplica(t *testing.T, h *handlings, name string, cfg redisbus.Config, tp string) *replica {
	t.Helper()
	ps, err := redisbus.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 32, InOrder: true})
	require.NoError(t, err)
	r := &replica{name: name, ps: ps, cancel: cancel, dead: make(chan struct{})}
	r.done.Go(func() {
		var handlers sync.WaitGroup
		defer handlers.Wait()
		for m := range ch {
			handlers.Go(func() { h.handle(r, m) })
		}
	})
	return r
}

func (h *handlings) handle(r *replica, m *message.Message) {
	select {
	case <-r.dead:
		return
	default:
	}
	key, seqText, _ := strings.Cut(string(m.Payload), ":")
	seq, _ := strconv.Atoi(seqText)
	h.mu.Lock()
	if h.inbox[m.UUID] {
		h.mu.Unlock()
		m.Ack()
		return
	}
	if other, ok := h.busy[key]; ok && other != r.name {
		h.twoAtOne++
	}
	h.busy[key] = r.name
	h.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // the handler's work
	h.mu.Lock()
	h.inbox[m.UUID] = true
	h.byKey[key] = append(h.byKey[key], seq)
	h.count[r.name]++
	h.keysOf[key] = r.name
	delete(h.busy, key)
	h.mu.Unlock()
	m.Ack()
}

func (r *replica) kill() {
	close(r.dead)
	redisbus.Kill(r.ps)
}

func (r *replica) stop(t *testing.T) {
	r.cancel()
	r.done.Wait()
	require.NoError(t, r.ps.Close())
}

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

// Three replicas share a topic of eight lanes with InOrder while keyed
// messages are appended without pause; one is killed (a fourth starts in
// its place), one stops cleanly. Each key is handled by one replica at a
// time and in order, nothing is lost, every replica handled some, and
// the killed one's keys are handled by the others within 5s (the
// defaults: Lease 3s, a step every 0.5s); its pending entries, under the
// lane's one consumer name, are read first by the lane's next owner.
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

	h := newHandlings()
	const keys = 24
	last := make([]int, keys)
	stopPub := make(chan struct{})
	var producer sync.WaitGroup
	producer.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			default:
			}
			k := i % keys
			key := fmt.Sprintf("k%02d", k)
			m := message.NewMessage(fmt.Sprintf("%s-%d", key, last[k]+1), fmt.Appendf(nil, "%s:%d", key, last[k]+1))
			m.Metadata.Set(fxbus.MetadataKey, key)
			if !assert.NoError(t, pub.Publish(tp, m)) {
				return
			}
			last[k]++
			if k == 0 {
				time.Sleep(5 * time.Millisecond) // pacing the producer, not synchronisation
			}
		}
	})
	named := func(n string) redisbus.Config { c := cfg; c.Consumer = n; return c }
	a := startReplica(t, h, "a", named("a"), tp)
	b := startReplica(t, h, "b", named("b"), tp)
	c := startReplica(t, h, "c", named("c"), tp)
	handledBy := func(r string) func() bool {
		return func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.count[r] > 20 }
	}
	eventually(t, "every replica handles", func() bool { return handledBy("a")() && handledBy("b")() && handledBy("c")() })

	h.mu.Lock()
	var cKeys []string
	for key, r := range h.keysOf {
		if r == "c" {
			cKeys = append(cKeys, key)
		}
	}
	h.mu.Unlock()
	killed := time.Now()
	c.kill()
	eventually(t, "c's keys are handled by the others", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, key := range cKeys {
			if h.keysOf[key] == "c" {
				return false
			}
		}
		return true
	})
	takeover := time.Since(killed)
	c.cancel()
	require.NoError(t, c.ps.Close())
	c.done.Wait()

	d := startReplica(t, h, "d", named("d"), tp)
	eventually(t, "d handles", handledBy("d"))
	b.stop(t)
	close(stopPub)
	producer.Wait()
	total := 0
	for _, n := range last {
		total += n
	}
	eventually(t, "everything is handled", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.inbox) == total })
	a.stop(t)
	d.stop(t)

	wrong, lost := 0, 0
	for k, n := range last {
		seqs := h.byKey[fmt.Sprintf("k%02d", k)]
		for i, x := range seqs {
			for _, y := range seqs[i+1:] {
				if x > y {
					wrong++
				}
			}
		}
		lost += n - len(seqs)
	}
	t.Logf("%d messages over %d keys; handled by a %d, b %d, c %d, d %d; takeover after the kill %v; %d wrong-order pairs, %d lost, %d keys handled by two at once",
		total, keys, h.count["a"], h.count["b"], h.count["c"], h.count["d"], takeover.Round(time.Millisecond), wrong, lost, h.twoAtOne)
	assert.Zero(t, wrong, "wrong-order pairs of a key's handlings")
	assert.Zero(t, lost)
	assert.Zero(t, h.twoAtOne, "a key handled by two replicas at once")
	// The documented takeover is within 5s (Lease 3s and a step); it is
	// logged above, 2.5s to 4.0s under a load average of 26 on 2 cores.
	// The bound is twice that, so that a machine too busy to run the
	// replicas on time does not fail the test, while a takeover that
	// waits for more than one lease, or never comes, still does.
	assert.LessOrEqual(t, takeover, 10*time.Second, "takeover after a kill")
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

// eventually waits, up to a minute, for cond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition on the server
	}
}
