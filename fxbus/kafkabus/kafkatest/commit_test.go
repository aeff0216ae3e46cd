package kafkatest

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitWatch sees every offset commit that a group of one topic of one
// partition sends to the cluster, and checks each against the messages
// handled when it arrives: a commit of offset o says that every offset
// below o was handled.
type commitWatch struct {
	mu       sync.Mutex
	handled  map[int64]bool
	highest  int64
	passed   []string // commits past an unhandled message
	advanced chan struct{}
}

func watchCommits(c *kfake.Cluster, group string) *commitWatch {
	w := &commitWatch{handled: map[int64]bool{}, highest: -1, advanced: make(chan struct{}, 1)}
	c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		if r.Group != group {
			return nil, nil, false
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, t := range r.Topics { // the group's one topic (named by its id from v10 on)
			for _, p := range t.Partitions {
				for o := range p.Offset {
					if !w.handled[o] {
						w.passed = append(w.passed, "commit of "+strconv.FormatInt(p.Offset, 10)+" with offset "+strconv.FormatInt(o, 10)+" unhandled")
						break
					}
				}
				if p.Offset > w.highest {
					w.highest = p.Offset
					select {
					case w.advanced <- struct{}{}:
					default:
					}
				}
			}
		}
		return nil, nil, false // seen; the cluster handles it
	})
	return w
}

func (w *commitWatch) handle(o int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handled[o] = true
}

// reached waits until a commit of at least o was sent.
func (w *commitWatch) reached(t *testing.T, o int64) {
	t.Helper()
	deadline := time.After(wait)
	for {
		w.mu.Lock()
		h := w.highest
		w.mu.Unlock()
		if h >= o {
			return
		}
		select {
		case <-w.advanced:
		case <-deadline:
			t.Fatalf("no commit of %d within %v (highest %d)", o, wait, h)
		}
	}
}

// Every commit the subscription sends, at its interval, is checked as it
// arrives: none passes a message not yet handled, though the messages
// after it were acknowledged first; once it is handled, the commit goes
// to the end.
func TestNoCommitPassesAnUnhandledMessage(t *testing.T) {
	c := newCluster(t)
	group, topic := name(t, "g"), name(t, "t")
	ps := newPubSub(t, c, group, func(cfg *kafkabus.Config) {
		cfg.Partitions = 1
		cfg.CommitInterval = 100 * time.Millisecond // the least
	})
	require.NoError(t, ps.Provision(t.Context(), topic))
	for i := range 8 {
		require.NoError(t, ps.Publish(topic, keyed(strconv.Itoa(i), "", "")))
	}
	w := watchCommits(c, group)
	ch, err := ps.SubscribeFlow(t.Context(), topic, fxbus.Flow{InFlight: 8})
	require.NoError(t, err)
	ms := receive(t, ch, 8)
	require.Equal(t, []string{"0", "1", "2", "3", "4", "5", "6", "7"}, ids(ms))
	ack := func(i int) {
		w.handle(int64(i))
		ms[i].Ack()
	}
	for _, i := range []int{7, 6, 5, 4, 3, 1, 0} {
		ack(i)
	}
	// The first commit at or past 2: one that took the acknowledged 3 to
	// 7 along would pass 2.
	w.reached(t, 2)
	ms[2].Nack()
	again := receive(t, ch, 1)
	require.Equal(t, "2", again[0].UUID)
	w.handle(2)
	again[0].Ack()
	w.reached(t, 8)
	w.mu.Lock()
	defer w.mu.Unlock()
	assert.Empty(t, w.passed)
}
