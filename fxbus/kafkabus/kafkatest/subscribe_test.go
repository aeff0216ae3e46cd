package kafkatest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

func TestPublishSubscribe(t *testing.T) {
	c := newCluster(t)
	group := name(t, "g")
	ps := newPubSub(t, c, group)
	topic := name(t, "t")
	require.NoError(t, ps.Provision(t.Context(), topic))
	var sent []*message.Message
	for i := range 30 {
		m := keyed(fmt.Sprintf("id-%d", i), fmt.Sprintf("k%d", i%6), strconv.Itoa(i/6))
		m.Metadata.Set("tenant", "acme")
		sent = append(sent, m)
	}
	require.NoError(t, ps.Publish(topic, sent...))

	ch, err := ps.SubscribeFlow(t.Context(), topic, fxbus.Flow{InFlight: 4, InOrder: true})
	require.NoError(t, err)
	got := map[string]*message.Message{}
	last := map[string]int{}
	handle(t, ch, len(sent), func(m *message.Message) {
		got[m.UUID] = m
		key := m.Metadata.Get(fxbus.MetadataKey)
		seq, _ := strconv.Atoi(string(m.Payload))
		if prev, ok := last[key]; ok {
			assert.Greater(t, seq, prev, "key %s", key)
		}
		last[key] = seq
	})
	for _, s := range sent {
		if assert.Contains(t, got, s.UUID) {
			assert.Equal(t, s.Payload, got[s.UUID].Payload)
			assert.Equal(t, "acme", got[s.UUID].Metadata.Get("tenant"))
			assert.Equal(t, s.Metadata.Get(fxbus.MetadataKey), got[s.UUID].Metadata.Get(fxbus.MetadataKey))
		}
	}
}

// With InOrder, a key's next message is handed over only once the one
// before it was acknowledged, while other keys go on; a nacked one comes
// again before its key's later ones. Without InOrder, all go at once.
func TestInOrderHoldsAKeyBehindItsMessageInFlight(t *testing.T) {
	c := newCluster(t)
	ps := newPubSub(t, c, name(t, "g"), func(cfg *kafkabus.Config) { cfg.Partitions = 1 })
	topic := name(t, "t")
	require.NoError(t, ps.Provision(t.Context(), topic))
	require.NoError(t, ps.Publish(topic, keyed("a1", "a", ""), keyed("a2", "a", ""), keyed("b1", "b", ""), keyed("a3", "a", "")))

	ch, err := ps.SubscribeFlow(t.Context(), topic, fxbus.Flow{InFlight: 8, InOrder: true})
	require.NoError(t, err)
	first := receive(t, ch, 2)
	assert.Equal(t, []string{"a1", "b1"}, ids(first), "a2 waits behind a1; b1 does not")
	first[0].Nack()
	again := receive(t, ch, 1)
	assert.Equal(t, "a1", again[0].UUID, "a nacked message comes again before its key's later ones")
	again[0].Ack()
	next := receive(t, ch, 1)
	assert.Equal(t, "a2", next[0].UUID)
	next[0].Ack()
	last := receive(t, ch, 1)
	assert.Equal(t, "a3", last[0].UUID)
	last[0].Ack()
	first[1].Ack()
}

func TestInFlightBoundsWhatIsHandedOver(t *testing.T) {
	c := newCluster(t)
	ps := newPubSub(t, c, name(t, "g"), func(cfg *kafkabus.Config) { cfg.Partitions = 2 })
	topic := name(t, "t")
	require.NoError(t, ps.Provision(t.Context(), topic))
	for i := range 10 {
		require.NoError(t, ps.Publish(topic, keyed(strconv.Itoa(i), "same", "")))
	}
	ch, err := ps.SubscribeFlow(t.Context(), topic, fxbus.Flow{InFlight: 3})
	require.NoError(t, err)
	held := receive(t, ch, 3)
	select {
	case m := <-ch:
		t.Fatalf("a fourth message (%s) was handed over with 3 in flight", m.UUID)
	default:
	}
	held[1].Ack()
	more := receive(t, ch, 1)
	assert.NotContains(t, ids(held), more[0].UUID)
	for _, m := range append(held, more...) {
		m.Ack()
	}
	handle(t, ch, 6, func(*message.Message) {})
}

// A partition's committed offset is the one after its highest contiguous
// acknowledged message: acknowledged messages behind one that is not do
// not move it, and one that is nacked and handled again does.
func TestCommitNeverPassesAnUnhandledMessage(t *testing.T) {
	c := newCluster(t)
	group := name(t, "g")
	ps := newPubSub(t, c, group, func(cfg *kafkabus.Config) { cfg.Partitions = 1 })
	topic := name(t, "t")
	require.NoError(t, ps.Provision(t.Context(), topic))
	for i := range 5 {
		require.NoError(t, ps.Publish(topic, keyed(strconv.Itoa(i), "", "")))
	}
	ch, err := ps.SubscribeFlow(t.Context(), topic, fxbus.Flow{InFlight: 5})
	require.NoError(t, err)
	ms := receive(t, ch, 5)
	require.Equal(t, []string{"0", "1", "2", "3", "4"}, ids(ms))
	ms[4].Ack()
	ms[3].Ack()
	ms[1].Ack()
	ms[0].Ack()
	eventually(t, "offset 2 committed", func() bool { return committed(c, group, topic, 0) == 2 })
	ms[2].Nack()
	again := receive(t, ch, 1)
	require.Equal(t, "2", again[0].UUID)
	assert.Equal(t, int64(2), committed(c, group, topic, 0), "not past the message handed over again")
	again[0].Ack()
	eventually(t, "offset 5 committed", func() bool { return committed(c, group, topic, 0) == 5 })
}

// A replica that starts after another stopped goes on from the committed
// offsets: nothing handled is handed over again, nothing unhandled lost.
// The stopped one committed as it closed, not at its next interval.
func TestRestartGoesOnFromTheCommittedOffsets(t *testing.T) {
	c := newCluster(t)
	group, topic := name(t, "g"), name(t, "t")
	// No interval passes: the close commits what was handled.
	ps := newPubSub(t, c, group, func(cfg *kafkabus.Config) { cfg.CommitInterval = time.Hour })
	require.NoError(t, ps.Provision(t.Context(), topic))
	for i := range 20 {
		require.NoError(t, ps.Publish(topic, keyed(strconv.Itoa(i), "k"+strconv.Itoa(i%5), "")))
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := ps.SubscribeFlow(ctx, topic, fxbus.Flow{InFlight: 4, InOrder: true})
	require.NoError(t, err)
	handled := map[string]bool{}
	handle(t, ch, 10, func(m *message.Message) { handled[m.UUID] = true })
	cancel()
	for m := range ch { // handed over as the subscription ended: not handled
		m.Nack()
	}
	ps2 := newPubSub(t, c, group)
	ch2, err := ps2.SubscribeFlow(t.Context(), topic, fxbus.Flow{InFlight: 4, InOrder: true})
	require.NoError(t, err)
	handle(t, ch2, 10, func(m *message.Message) {
		assert.False(t, handled[m.UUID], "message %s handed over again", m.UUID)
		handled[m.UUID] = true
	})
	assert.Len(t, handled, 20)
}

func ids(ms []*message.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.UUID
	}
	return out
}

// member is a group member that handles its subscription's messages,
// recording each one's effect, until it is stopped.
type member struct {
	ps     *kafkabus.PubSub
	cancel context.CancelFunc
	done   chan struct{}
}

func startMember(t *testing.T, c *kfake.Cluster, group, topic string, fx *effects, handledBy *sync.Map, who string) *member {
	ps := newPubSub(t, c, group)
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := ps.SubscribeFlow(ctx, topic, fxbus.Flow{InFlight: 4, InOrder: true})
	require.NoError(t, err)
	m := &member{ps: ps, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for msg := range ch {
			seq, _ := strconv.Atoi(string(msg.Payload))
			key := msg.Metadata.Get(fxbus.MetadataKey)
			fx.record(key, msg.UUID, seq)
			handledBy.Store(who, true)
			msg.Ack()
		}
	}()
	return m
}

func (m *member) stop() {
	m.cancel()
	<-m.done
}

// Three replicas join and leave a cooperative group while keyed messages
// flow: every message is handled, each key's effects in order, and every
// partition is handled.
func TestGroupMembersJoinAndLeaveWhileKeysKeepTheirOrder(t *testing.T) {
	c := newCluster(t)
	group, topic := name(t, "g"), name(t, "t")
	prod := newPubSub(t, c, "")
	require.NoError(t, prod.Provision(t.Context(), topic))
	// Keys that cover all 8 partitions.
	var keys []string
	covered := map[int32]bool{}
	for i := 0; len(covered) < 8 || len(keys) < 24; i++ {
		k := "key-" + strconv.Itoa(i)
		covered[partitionOf(k, 8)] = true
		keys = append(keys, k)
	}
	seq := map[string]int{}
	total := 0
	produce := func(rounds int) {
		for range rounds {
			batch := make([]*message.Message, 0, len(keys))
			for _, k := range keys {
				batch = append(batch, keyed(fmt.Sprintf("%s/%d", k, seq[k]), k, strconv.Itoa(seq[k])))
				seq[k]++
			}
			acked, err := prod.PublishBatch(topic, batch)
			require.NoError(t, err)
			require.Equal(t, len(batch), acked)
			total += len(batch)
		}
	}
	fx := newEffects()
	var by sync.Map
	stable := func(n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		g, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
			return g != nil && g.State == "Stable" && len(g.Members) == n && g.NumAssigned() == 8
		})
		require.NoError(t, err, "%d members with all 8 partitions: %+v", n, g)
		for _, m := range g.Members {
			assert.NotZero(t, m.NumAssigned(), "member %s has no partition", m.MemberID)
		}
	}

	a := startMember(t, c, group, topic, fx, &by, "a")
	b := startMember(t, c, group, topic, fx, &by, "b")
	stable(2) // before producing, or the first member takes every partition
	produce(10)
	cm := startMember(t, c, group, topic, fx, &by, "c")
	produce(10)
	stable(3)
	produce(10)
	a.stop()
	produce(10)
	stable(2)
	produce(10)
	eventually(t, "every message handled", func() bool { return fx.count() == total })
	b.stop()
	cm.stop()

	assert.Zero(t, fx.wrongOrder(), "pairs of a key's effects in the wrong order")
	handledParts := map[int32]bool{}
	for k := range fx.byKey {
		handledParts[partitionOf(k, 8)] = true
	}
	assert.Len(t, handledParts, 8, "every partition handled")
	whos := map[any]bool{}
	by.Range(func(k, _ any) bool { whos[k] = true; return true })
	assert.Len(t, whos, 3, "each member handled messages")
}

// A partition taken from a member in a rebalance is given up only after
// its messages in flight were handled: they are not handed to the next
// owner, which goes on after them.
func TestRevokeFinishesTheMessagesInFlight(t *testing.T) {
	c := newCluster(t)
	group, topic := name(t, "g"), name(t, "t")
	prod := newPubSub(t, c, "", func(cfg *kafkabus.Config) { cfg.Partitions = 2 })
	require.NoError(t, prod.Provision(t.Context(), topic))
	var k0, k1 string // a key in each partition
	for i := 0; k0 == "" || k1 == ""; i++ {
		k := "k" + strconv.Itoa(i)
		if partitionOf(k, 2) == 0 && k0 == "" {
			k0 = k
		} else if partitionOf(k, 2) == 1 && k1 == "" {
			k1 = k
		}
	}
	require.NoError(t, prod.Publish(topic, keyed("held-0", k0, "0"), keyed("held-1", k1, "0")))

	// A's interval is long: only its revoke's own commit lets B go on
	// after the message A handled.
	psA := newPubSub(t, c, group, func(cfg *kafkabus.Config) { cfg.CommitInterval = time.Hour })
	chA, err := psA.SubscribeFlow(t.Context(), topic, fxbus.Flow{InFlight: 2, InOrder: true})
	require.NoError(t, err)
	held := receive(t, chA, 2) // one in flight in each partition

	psB := newPubSub(t, c, group)
	chB, err := psB.SubscribeFlow(t.Context(), topic, fxbus.Flow{InFlight: 2, InOrder: true})
	require.NoError(t, err)
	// The group takes a partition from A (the cooperative protocol's first
	// round): A is now giving it up, and waits for its message in flight.
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	g, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
		return g != nil && len(g.Members) == 2 && g.NumAssigned() == 1
	})
	require.NoError(t, err, "%+v", g)
	require.NoError(t, prod.Publish(topic, keyed("next-0", k0, "1"), keyed("next-1", k1, "1")))
	for _, m := range held {
		m.Ack()
	}
	_, err = c.WaitGroupStable(ctx, group, 2)
	require.NoError(t, err)
	got := receive(t, chB, 1)[0]
	assert.Contains(t, []string{"next-0", "next-1"}, got.UUID, "B goes on after A's handled message, not with it")
	got.Ack()
	gotA := receive(t, chA, 1)[0]
	assert.Contains(t, []string{"next-0", "next-1"}, gotA.UUID)
	assert.NotEqual(t, got.UUID, gotA.UUID)
	gotA.Ack()
}
