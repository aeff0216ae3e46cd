package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait on a condition: generous, as the machine is shared.
const wait = 60 * time.Second

// newCluster is three in-process brokers, closed with the test.
func newCluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// newPubSub is a PubSub on c for group, closed with the test; edit
// changes its Config.
func newPubSub(t testing.TB, c *kfake.Cluster, group string, edit ...func(*kafkabus.Config)) *kafkabus.PubSub {
	t.Helper()
	cfg := kafkabus.Config{Brokers: c.ListenAddrs(), Group: group, Partitions: 8, RebalanceTimeout: 20 * time.Second}
	for _, e := range edit {
		e(&cfg)
	}
	ps, err := kafkabus.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close()) })
	return ps
}

// name is a topic or group name of the test's own.
func name(t testing.TB, kind string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s.%s.%s", kind, n, hex.EncodeToString(b))
}

// partitionOf is the partition franz-go's producer picks for key among n:
// Kafka's murmur2 of the key.
func partitionOf(key string, n int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: []byte(key)}, n))
}

// keyed is a message with id, key and payload.
func keyed(id, key, payload string) *message.Message {
	m := message.NewMessage(id, []byte(payload))
	if key != "" {
		m.Metadata.Set(fxbus.MetadataKey, key)
	}
	return m
}

// receive takes n messages from ch within wait.
func receive(t testing.TB, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	out := make([]*message.Message, 0, n)
	deadline := time.After(wait)
	for len(out) < n {
		select {
		case m, ok := <-ch:
			require.True(t, ok, "the subscription closed after %d of %d messages", len(out), n)
			out = append(out, m)
		case <-deadline:
			t.Fatalf("%d of %d messages within %v", len(out), n, wait)
		}
	}
	return out
}

// drainWait bounds the consumer crash test's drain.
const drainWait = 5 * time.Minute

// eventually waits for cond, failing with what after wait.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, wait, what, cond)
}

// eventuallyWithin waits for cond, failing with what after within.
func eventuallyWithin(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("not within %v: %s", within, what)
		case <-tick.C:
		}
	}
}

// committed is group's committed offset of topic's partition, -1 if none.
func committed(c *kfake.Cluster, group, topic string, partition int32) int64 {
	g := c.GroupInfo(group)
	if g == nil {
		return -1
	}
	if pc, ok := g.Commits[topic][partition]; ok {
		return pc.Offset
	}
	return -1
}

// rawRecords reads n records of topic from its start, as they lie.
func rawRecords(t testing.TB, c *kfake.Cluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "%d of %d records", len(out), n)
		out = append(out, fs.Records()...)
	}
	return out
}

// effects records what handlers did, once per message id (as the inbox
// does), in the order they did it, per key.
type effects struct {
	mu    sync.Mutex
	seen  map[string]bool
	byKey map[string][]int
	n     int
}

func newEffects() *effects { return &effects{seen: map[string]bool{}, byKey: map[string][]int{}} }

// record records msg's effect unless its id had one; seq is its place
// among its key's messages.
func (e *effects) record(key string, id string, seq int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seen[id] {
		return
	}
	e.seen[id] = true
	e.byKey[key] = append(e.byKey[key], seq)
	e.n++
}

func (e *effects) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// wrongOrder counts the pairs of one key's effects in the wrong order.
func (e *effects) wrongOrder() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	bad := 0
	for _, seqs := range e.byKey {
		for i := range seqs {
			for j := i + 1; j < len(seqs); j++ {
				if seqs[i] > seqs[j] {
					bad++
				}
			}
		}
	}
	return bad
}

// handle takes n messages from ch within wait, calling fn with each and
// acknowledging it.
func handle(t testing.TB, ch <-chan *message.Message, n int, fn func(*message.Message)) {
	t.Helper()
	for range n {
		m := receive(t, ch, 1)[0]
		fn(m)
		m.Ack()
	}
}
