package fxbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/internal/fakeclock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// timerClock is the repository's fake clock (Config.Now, Config.After):
// it moves only when told, and fires the timers it passes.
type timerClock = fakeclock.Clock

func newTimerClock() *timerClock {
	return fakeclock.New(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
}

// Tick is the event of the rate limit and fair share tests.
type Tick struct {
	Key string
	Seq int
}

// publishTick publishes a Tick of key (and tenant, when not empty) to
// topic, as a producer in another service would.
func publishTick(t testing.TB, pub message.Publisher, topic, key, tenant string, seq int) {
	t.Helper()
	require.NoError(t, pub.Publish(topic, tickMessage(key, tenant, seq)))
}

// tickMessage is a Tick of key (and tenant, when not empty) as a message.
func tickMessage(key, tenant string, seq int) *message.Message {
	payload, _ := json.Marshal(Tick{Key: key, Seq: seq})
	msg := message.NewMessage(fmt.Sprintf("%s-%d", key, seq), payload)
	msg.Metadata.Set(fxbus.MetadataKey, key)
	if tenant != "" {
		msg.Metadata.Set(fxbus.MetadataTenant, tenant)
	}
	return msg
}

// tickLog records the Ticks handled, in order.
type tickLog struct {
	mu    sync.Mutex
	got   []Tick
	more  chan struct{}
	gate  chan struct{} // when not nil, each handler waits for a value from it
	entry chan struct{} // when not nil, each handler says it began
}

func newTickLog() *tickLog { return &tickLog{more: make(chan struct{}, 1)} }

func (l *tickLog) handle(_ context.Context, e Tick) error {
	if l.entry != nil {
		l.entry <- struct{}{}
	}
	if l.gate != nil {
		<-l.gate
	}
	l.mu.Lock()
	l.got = append(l.got, e)
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
	return nil
}

func (l *tickLog) all() []Tick {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

func (l *tickLog) count(key string) int {
	n := 0
	for _, e := range l.all() {
		if e.Key == key {
			n++
		}
	}
	return n
}

// waitFor waits until ok holds of what was handled, for at most a
// generous bound (which only stops a broken test).
func (l *tickLog) waitFor(t testing.TB, what string, ok func([]Tick) bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for !ok(l.all()) {
		select {
		case <-l.more:
		case <-deadline:
			t.Fatalf("waited for %s; handled %d", what, len(l.all()))
		}
	}
}

// consumer starts a bus with one Tick subscription on topic, over sub,
// handling into log, stopped when the test ends.
func consumer(t testing.TB, cfg fxbus.Config, topic string, log *tickLog, opts ...fxbus.SubscribeOption) *fxbus.Bus {
	t.Helper()
	bus, err := fxbus.New(cfg, nil, []fxbus.Subscription{fxbus.NewSubscription[Tick](topic, opts...)})
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}}, fxcqrs.WithForwarder(bus),
		fxcqrs.WithEventHandlers(eventFunc[Tick](log.handle)))
	require.NoError(t, err)
	require.NoError(t, bus.Start(context.Background(), m))
	t.Cleanup(func() {
		if log.gate != nil {
			close(log.gate)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		assert.NoError(t, bus.Stop(ctx))
		assert.NoError(t, m.Stop(ctx))
	})
	return bus
}

// The in-process limiter is a GCRA: from rest, Burst go at once, then one
// every Every/Rate; over 10 s, 100/s with a burst of 50 lets exactly
// 1,050 go, and a refused take says how long to wait.
func TestLimiterKeepsRateAndBurst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := fxbus.NewLimiter()
	lim := fxbus.Limit{Per: fxbus.PerKey, Rate: 100, Every: time.Second, Burst: 50}
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

	took := 0
	for {
		wait, err := l.Take(ctx, "k", lim, start)
		require.NoError(t, err)
		if wait > 0 {
			assert.Equal(t, 10*time.Millisecond, wait, "the next one is an interval away")
			break
		}
		took++
	}
	assert.Equal(t, 50, took, "the burst goes at once")

	// Asking at every millisecond, as eager as can be, for 10 s.
	for at := start; !at.After(start.Add(10 * time.Second)); at = at.Add(time.Millisecond) {
		for {
			wait, err := l.Take(ctx, "k", lim, at)
			require.NoError(t, err)
			if wait > 0 {
				break
			}
			took++
		}
	}
	assert.Equal(t, 1050, took, "burst + rate × 10 s")

	wait, err := l.Take(ctx, "other", lim, start)
	require.NoError(t, err)
	assert.Zero(t, wait, "each budget is its own")
}

// A key over its limit waits for its budget outside the handler slots:
// with one slot, the other keys' messages, published after its backlog,
// are handled at once while it waits for the clock; it is then handled,
// every message, in its order under InOrder, and counted as throttled.
func TestRateLimitedKeyWaitsWithoutHoldingOthers(t *testing.T) {
	t.Parallel()
	for _, inOrder := range []bool{false, true} {
		t.Run(fmt.Sprintf("inOrder=%v", inOrder), func(t *testing.T) {
			t.Parallel()
			const hot, cold, coldKeys = 40, 3, 5
			broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
			t.Cleanup(func() { _ = broker.Close() })
			clock := newTimerClock()
			tp := topic(t, "ticks")
			got := newTickLog()
			opts := []fxbus.SubscribeOption{
				fxbus.InFlight(1), fxbus.Lookahead(100),
				fxbus.RateLimit(fxbus.Limit{Per: fxbus.PerKey, Rate: 10, Every: time.Second, Burst: 5}),
			}
			if inOrder {
				opts = append(opts, fxbus.InOrder())
			}
			bus := consumer(t, fxbus.Config{Publisher: broker, Subscriber: broker, Now: clock.Now, After: clock.After}, tp, got, opts...)
			for i := range hot {
				publishTick(t, broker, tp, "hot", "", i)
			}
			for k := range coldKeys {
				for i := range cold {
					publishTick(t, broker, tp, fmt.Sprintf("cold%d", k), "", i)
				}
			}
			got.waitFor(t, "the cold keys, with the clock still", func(ts []Tick) bool {
				n := 0
				for _, e := range ts {
					if e.Key != "hot" {
						n++
					}
				}
				return n == coldKeys*cold
			})
			got.waitFor(t, "the hot key's burst", func([]Tick) bool { return got.count("hot") >= 5 })
			require.Eventually(t, func() bool { return clock.Pending() > 0 }, time.Minute, time.Millisecond, "the hot key waits on the clock")
			assert.Equal(t, 5, got.count("hot"), "the hot key's burst, no more, with the clock still")
			assert.Positive(t, bus.Stats().Throttled)

			// One more every interval: the clock moves once the hot key's
			// next waits on it.
			for got.count("hot") < hot {
				require.Eventually(t, func() bool { return clock.Pending() > 0 }, time.Minute, time.Millisecond)
				want := got.count("hot") + 1
				clock.Advance(100 * time.Millisecond)
				got.waitFor(t, "the hot key's next", func([]Tick) bool { return got.count("hot") >= want })
				assert.Equal(t, want, got.count("hot"), "one an interval")
			}
			assert.Equal(t, uint64(hot-5), bus.Stats().Throttled, "each waiting message counted once")
			if inOrder {
				var seqs []int
				for _, e := range got.all() {
					if e.Key == "hot" {
						seqs = append(seqs, e.Seq)
					}
				}
				assert.True(t, slices.IsSorted(seqs), "the hot key's order: %v", seqs)
			}
		})
	}
}

// A malformed limit, fair share or lookahead fails at construction,
// naming the subscription and what to fix; topics' subscriptions must
// agree on their fair shares.
func TestRateLimitOptionsAreChecked(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	_, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc}, nil, []fxbus.Subscription{
		fxbus.NewSubscription[Tick]("a", fxbus.RateLimit(fxbus.Limit{Per: fxbus.PerKey})),
		fxbus.NewSubscription[Tick]("b", fxbus.RateLimit(fxbus.Limit{Rate: 1})),
		fxbus.NewSubscription[Tick]("c", fxbus.FairShares(fxbus.Per(9)), fxbus.Lookahead(-1)),
	})
	require.Error(t, err)
	assert.ErrorContains(t, err, "fxbus.Subscribe[fxbus_test.Tick]: RateLimit: Rate must be positive: got 0")
	assert.ErrorContains(t, err, "RateLimit: Per must be PerKey, PerTenant or PerType: got Per(0)")
	assert.ErrorContains(t, err, "FairShares must count PerKey, PerTenant or PerType: got Per(9)")
	assert.ErrorContains(t, err, "Lookahead must not be negative: got -1")

	_, err = fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc}, nil, []fxbus.Subscription{
		fxbus.NewSubscription[Tick]("d", fxbus.FairShares(fxbus.PerKey)),
		fxbus.NewSubscription[OrderPlaced]("d"),
	})
	assert.ErrorContains(t, err, `the subscriptions of "d" disagree on FairShares or Lookahead`)
}

// countingLimiter lets every message go, and counts the takes.
type countingLimiter struct{ takes atomic.Int64 }

func (l *countingLimiter) Take(context.Context, string, fxbus.Limit, time.Time) (time.Duration, error) {
	l.takes.Add(1)
	return 0, nil
}

// Under fx, a Limiter in the graph keeps the subscriptions' budgets.
func TestModuleTakesALimiter(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "ticks")
	limiter := &countingLimiter{}
	got := newTickLog()
	service(t, gc, gc,
		fx.Supply(fx.Annotate(limiter, fx.As(new(fxbus.Limiter)))),
		fxbus.Subscribe[Tick](tp, fxbus.RateLimit(fxbus.Limit{Per: fxbus.PerKey, Rate: 1})),
		fxcqrs.AsEventHandler(func() eventFunc[Tick] { return got.handle }),
	)
	publishTick(t, gc, tp, "a", "", 1)
	got.waitFor(t, "the message", func(ts []Tick) bool { return len(ts) == 1 })
	assert.Equal(t, int64(1), limiter.takes.Load(), "the graph's limiter took it")
}
