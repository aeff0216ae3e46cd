package bustest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Through a real bus, a subscription with InFlight(n) never runs more
// than n handlers at once; an adapter that states Parallel runs n at
// once. The handlers wait at a barrier that opens only once n of them
// are in it (or the deadline passed): a serial adapter never gets there.
func (s *suite) inFlightBus(t *testing.T) {
	const n = 4
	tp := s.topic(t, "inflight")
	pub, sub := s.open(t, "a", tp, tp+"_poison")
	caps, _ := capsOf(pub, sub)
	var (
		running, most atomic.Int64
		handled       sync.Map
		count         atomic.Int64
	)
	release := make(chan struct{})
	var releaseOnce sync.Once
	open := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(open)
	consume(t, pub, sub, tp, consumerConfig{inFlight: n, handlers: 2 * n}, func(ctx context.Context, e Keyed) error {
		r := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
		}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		if _, dup := handled.LoadOrStore(e.Seq, true); !dup {
			count.Add(1)
		}
		return nil
	})
	prod, _ := s.a.Open(t, "p")
	const total = 3 * n
	for i := range total {
		publish(t, prod, tp, keyedMessage("", i))
	}
	want := int64(1)
	if caps.Parallel {
		want = n
	}
	reached := waitFor(func() bool { return running.Load() >= want })
	atOnce := running.Load()
	open()
	require.True(t, reached, "%d handlers at once at most with InFlight(%d) (Capabilities.Parallel: %v): the barrier waits for %d", atOnce, n, caps.Parallel, want)
	require.True(t, waitFor(func() bool { return count.Load() == total }), "handled %d of %d", count.Load(), total)
	assert.LessOrEqual(t, most.Load(), int64(n), "more handlers at once than InFlight(%d)", n)
	if !caps.Parallel && most.Load() > 1 {
		t.Logf("%d handlers ran at once, and the adapter does not state Parallel", most.Load())
	}
}

// An fxbus.FlowSubscriber hands over at most Flow.InFlight messages that
// are neither acknowledged nor nacked, and the next once one is.
func (s *suite) inFlightAdapter(t *testing.T) {
	tp := s.topic(t, "flow")
	pub, sub := s.open(t, "a", tp)
	caps, _ := capsOf(pub, sub)
	fs, ok := sub.(fxbus.FlowSubscriber)
	if !ok {
		require.False(t, caps.Parallel, "Capabilities.Parallel, and the subscriber (%T) is no fxbus.FlowSubscriber", sub)
		t.Logf("the subscriber (%T) is no fxbus.FlowSubscriber: the bus bounds what it takes, not the adapter", sub)
		return
	}
	const n = 3
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := fs.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: n})
	require.NoError(t, err)
	prod, _ := s.a.Open(t, "p")
	sent := newMessages(2*n, "flow")
	publish(t, prod, tp, sent...)
	held := receive(t, ch, n, false)
	// Nothing more may come while n are held: a bounded look, which a
	// correct adapter passes however long it lasts.
	select {
	case msg := <-ch:
		msg.Ack()
		t.Errorf("handed over a message (%s) while %d were unacknowledged, with Flow.InFlight %d", msg.UUID, n, n)
	case <-time.After(200 * time.Millisecond):
	}
	held[0].Ack()
	next := receive(t, ch, 1, true)
	for _, m := range held[1:] {
		m.Ack()
	}
	rest := receive(t, ch, 2*n-n-1, true)
	all := append(append(held, next...), rest...)
	assert.ElementsMatch(t, ids(sent), ids(all))
}

// effects records what handlers did, once per message id, as the inbox
// would: a message handled twice has one effect. Per key, it keeps the
// effects' order.
type effects struct {
	mu     sync.Mutex
	seen   map[string]bool  // message ids with an effect
	byKey  map[string][]int // sequence numbers, in the order of their effects
	n      int
	killed map[int]bool // consumers that record nothing any more
}

func newEffects() *effects {
	return &effects{seen: map[string]bool{}, byKey: map[string][]int{}, killed: map[int]bool{}}
}

// done reports whether the message id has had its effect: the inbox
// skips it.
func (e *effects) done(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[id]
}

// record records the effect of the Seq'th message of key, id, handled by
// consumer, unless it had one or the consumer was killed.
func (e *effects) record(consumer int, id string, ev Keyed) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seen[id] || e.killed[consumer] {
		return
	}
	e.seen[id] = true
	e.byKey[ev.Key] = append(e.byKey[ev.Key], ev.Seq)
	e.n++
}

func (e *effects) kill(consumer int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.killed[consumer] = true
}

func (e *effects) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// has reports whether every one of ids has had its effect.
func (e *effects) has(ids []string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		if !e.seen[id] {
			return false
		}
	}
	return true
}

// wrongOrder counts, per key, the pairs of effects where a later message's
// came before an earlier one's, and returns the keys' sequences for the
// failure message.
func (e *effects) wrongOrder() (int, map[string][]int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	wrong := 0
	for _, seqs := range e.byKey {
		for i := range seqs {
			for j := i + 1; j < len(seqs); j++ {
				if seqs[i] > seqs[j] {
					wrong++
				}
			}
		}
	}
	out := make(map[string][]int, len(e.byKey))
	for k, seqs := range e.byKey {
		out[k] = append([]int(nil), seqs...)
	}
	return wrong, out
}

// checkOrder fails t when keys' effects are out of order and the adapter
// states OrderPerKey, and logs the count otherwise.
func (e *effects) checkOrder(t *testing.T, caps fxbus.Capabilities) {
	t.Helper()
	wrong, seqs := e.wrongOrder()
	if caps.OrderPerKey {
		assert.Zero(t, wrong, "wrong-order pairs of a key's effects, and the adapter states OrderPerKey: %v", seqs)
		return
	}
	t.Logf("%d wrong-order pairs of a key's effects; the adapter does not state OrderPerKey", wrong)
}

// keyedStream returns perKey messages of each of keys keys, from
// sequence number from, the keys interleaved as producers send them.
func keyedStream(keys, from, perKey int) []*message.Message {
	var msgs []*message.Message
	for seq := from; seq < from+perKey; seq++ {
		for k := range keys {
			msgs = append(msgs, keyedMessage(fmt.Sprintf("k%02d", k), seq))
		}
	}
	return msgs
}

// errNack is what a handler returns to have its message nacked, for the
// broker to redeliver it: the bus nacks a message whose handling failed
// because the mediator is stopping.
var errNack = fmt.Errorf("bustest: nacked on purpose: %w", fxcqrs.ErrStopped)

// A subscription with InOrder, through a real bus, with handlers that
// fail at random (retried in the process) and nack at random (redelivered
// by the broker): each key's effects happen in the key's order, when the
// adapter states OrderPerKey. Different keys still run in parallel.
func (s *suite) inOrder(t *testing.T) {
	const keys, perKey = 6, 30
	tp := s.topic(t, "inorder")
	pub, sub := s.open(t, "a", tp, tp+"_poison")
	caps, _ := capsOf(pub, sub)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	var (
		mu    sync.Mutex
		rng   = rand.New(rand.NewPCG(seed, 0))
		fails = map[string]int{} // failures and nacks of a message id
	)
	eff := newEffects()
	consume(t, pub, sub, tp, consumerConfig{
		inFlight: 12, inOrder: true, handlers: 12,
		retry: fxbus.RetryPolicy{MaxRetries: 10, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond},
	}, func(ctx context.Context, e Keyed) error {
		id := fxbus.MessageID(ctx)
		if eff.done(id) {
			return nil
		}
		mu.Lock()
		r, f := rng.IntN(8), fails[id]
		if r < 2 && f < 3 {
			fails[id]++
		}
		mu.Unlock()
		switch {
		case r == 0 && f < 3:
			return errors.New("bustest: a failure at random")
		case r == 1 && f < 3:
			return errNack
		}
		eff.record(0, id, e)
		return nil
	})
	prod, _ := s.a.Open(t, "p")
	sent := keyedStream(keys, 0, perKey)
	publish(t, prod, tp, sent...)
	require.True(t, waitFor(func() bool { return eff.has(ids(sent)) }), "effects of %d of %d messages", eff.count(), len(sent))
	eff.checkOrder(t, caps)
}

// A key's effects stay in order across a restart of the consuming
// process (issue 42): a consumer takes part of a keyed stream and stops
// in the middle of it, cleanly (Close: its bus stops, then its publisher
// and subscriber close) or as a killed process does (Abandon: its
// connections are cut, nothing acknowledged or nacked after); a new one
// opens for the same group and takes the rest, while more is published.
// Effects happen once per message id, as the inbox makes them: a message
// handled twice is no violation, a later message's effect before an
// earlier one's is. Nothing is lost, unless the broker is in-process.
func (s *suite) orderAcrossRestart(t *testing.T, abandon bool) {
	if abandon && s.a.Abandon == nil {
		t.Log("Adapter.Abandon is not given: the adapter cannot model a crash here")
		return
	}
	const keys, first, second = 6, 40, 20
	tp := s.topic(t, "restart")
	eff := newEffects()
	threshold := keys * first / 3

	pub1, sub1 := s.open(t, "a", tp, tp+"_poison")
	caps, _ := capsOf(pub1, sub1)
	resume := make(chan struct{}) // Close: lets the first consumer's halted handlers finish
	var resumeOnce sync.Once
	letGo := func() { resumeOnce.Do(func() { close(resume) }) }
	cfg := consumerConfig{inFlight: 8, inOrder: true, handlers: 8}
	c1 := consume(t, pub1, sub1, tp, cfg, func(ctx context.Context, e Keyed) error {
		id := fxbus.MessageID(ctx)
		if eff.done(id) {
			return nil
		}
		if eff.count() >= threshold {
			<-resume // halted in the middle of the stream
			if abandon {
				return errNack // the process is dead: this reaches nothing
			}
		}
		eff.record(1, id, e)
		return nil
	})
	t.Cleanup(letGo) // before c1 stops (cleanups run last first)

	prod, _ := s.a.Open(t, "p")
	sent := keyedStream(keys, 0, first)
	publish(t, prod, tp, sent...)
	require.True(t, waitFor(func() bool { return eff.count() >= threshold }), "the first consumer handled %d of %d", eff.count(), threshold)

	if abandon {
		eff.kill(1)
		s.a.Abandon(t, pub1, sub1)
	} else {
		stopped := make(chan struct{})
		go func() { defer close(stopped); c1.stop(t) }()
		letGo()
		<-stopped
		assert.NoError(t, sub1.Close(), "close the first subscriber")
		assert.NoError(t, pub1.Close(), "close the first publisher")
	}
	t.Logf("the first consumer stopped after %d effects", eff.count())

	pub2, sub2 := s.open(t, "a", tp, tp+"_poison")
	consume(t, pub2, sub2, tp, cfg, func(ctx context.Context, e Keyed) error {
		eff.record(2, fxbus.MessageID(ctx), e)
		return nil
	})
	more := keyedStream(keys, first, second)
	publish(t, prod, tp, more...)
	want := append(ids(sent), ids(more)...)
	if s.a.InProcess {
		want = ids(more) // what the first consumer held is gone with it
	}
	require.True(t, waitFor(func() bool { return eff.has(want) }), "effects of %d messages, of %d published", eff.count(), len(sent)+len(more))
	eff.checkOrder(t, caps)
}
