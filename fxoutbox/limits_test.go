package fxoutbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

var limit100PerKey = fxbus.Limit{Per: fxbus.PerKey, Rate: 100, Every: time.Second, Burst: 50}

// The shared limiter is the in-process one's GCRA, in the database: from
// rest the burst goes at once, a refused take says to wait an interval,
// and over 10 s exactly burst + rate × 10 s go, asked every 100 ms.
func TestSharedLimiterKeepsRateAndBurst(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		l, err := fxoutbox.NewSharedLimiter(d.DB, d.Dialect, fxoutbox.Tables{})
		require.NoError(t, err)
		start := newFakeClock().Now()
		took := 0
		for {
			wait, err := l.Take(ctx, "k", limit100PerKey, start)
			require.NoError(t, err)
			if wait > 0 {
				assert.Equal(t, 10*time.Millisecond, wait, "the next one is an interval away")
				break
			}
			took++
		}
		assert.Equal(t, 50, took, "the burst goes at once")
		for at := start; !at.After(start.Add(10 * time.Second)); at = at.Add(100 * time.Millisecond) {
			for {
				wait, err := l.Take(ctx, "k", limit100PerKey, at)
				require.NoError(t, err)
				if wait > 0 {
					break
				}
				took++
			}
		}
		assert.Equal(t, 1050, took, "burst + rate × 10 s")
	})
}

// Replicas taking from one budget at once, at one time, take the burst
// and no more: the take is atomic in the database.
func TestSharedLimiterTakesAtomically(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		now := newFakeClock().Now()
		var took atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			l, err := fxoutbox.NewSharedLimiter(d.DB, d.Dialect, fxoutbox.Tables{}) // a replica's own
			require.NoError(t, err)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					wait, err := l.Take(context.Background(), "shared", limit100PerKey, now)
					if !assert.NoError(t, err) {
						return
					}
					if wait == 0 {
						took.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		assert.Equal(t, int64(50), took.Load(), "100 takes at once, the burst of 50 taken")
	})
}

// Tick is the event of the rate limit test.
type Tick struct {
	Key string
	Seq int
}

type tickFunc func(context.Context, Tick) error

func (f tickFunc) Handle(ctx context.Context, e Tick) error { return f(ctx, e) }

// watchedLimiter and its clock tell the test when the subscriptions have
// done all they can at the clock's time: no message woken by the clock
// that has not asked again, no take under way, and none refused whose
// message does not wait on the clock yet.
type watchedLimiter struct {
	fxbus.Limiter
	busy    atomic.Int64 // takes under way, or refused and not yet waiting
	woken   atomic.Int64 // timers fired whose messages have not asked again
	granted atomic.Int64

	mu     sync.Mutex
	now    time.Time
	timers []stepTimer
}

type stepTimer struct {
	at time.Time
	ch chan time.Time
}

func (w *watchedLimiter) Take(ctx context.Context, name string, l fxbus.Limit, now time.Time) (time.Duration, error) {
	w.busy.Add(1)
	for n := w.woken.Load(); n > 0 && !w.woken.CompareAndSwap(n, n-1); n = w.woken.Load() {
	}
	wait, err := w.Limiter.Take(ctx, name, l, now)
	if err == nil && wait == 0 {
		w.granted.Add(1)
		w.busy.Add(-1)
	}
	return wait, err // refused: busy until the bus waits on the clock (After)
}

func (w *watchedLimiter) Now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *watchedLimiter) After(d time.Duration) <-chan time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan time.Time, 1)
	w.timers = append(w.timers, stepTimer{at: w.now.Add(d), ch: ch})
	w.busy.Add(-1)
	return ch
}

// Advance moves the clock d on and fires the timers it passed.
func (w *watchedLimiter) Advance(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.now = w.now.Add(d)
	kept := w.timers[:0]
	for _, tm := range w.timers {
		if tm.at.After(w.now) {
			kept = append(kept, tm)
			continue
		}
		w.woken.Add(1)
		tm.ch <- w.now
	}
	w.timers = kept
}

// The check of issue 49: a limit of 100/s per key with a burst of 50,
// over two replicas sharing one subscription and the database's budget,
// on one fake clock: at most 1,050 of a hot key's messages are handled in
// 10 s, every one in the end, and the other keys (within their budgets)
// are handled at once, the clock still. Without the limit, the check
// fails: every hot message goes at once.
//
// Each message the budget lets go is a commit, so the full span
// runs on PostgreSQL alone; MariaDB and SQLite run the same check over 2
// s (at most 50 + 2 × 100 = 250), which keeps the package's run short.
func TestRateLimitAcrossReplicas(t *testing.T) {
	t.Parallel()
	const hotKeys, cold, coldKeys = 2, 5, 20
	run := func(t *testing.T, d database, limited bool, seconds int) (by10s map[string]int) {
		hot := 100*seconds + 100 // more than the budget lets go in the span
		start := newFakeClock().Now()
		shared, err := fxoutbox.NewSharedLimiter(d.DB, d.Dialect, fxoutbox.Tables{})
		require.NoError(t, err)
		limiter := &watchedLimiter{Limiter: shared, now: start}
		clock := limiter
		broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{Queue: 8192})
		t.Cleanup(func() { _ = broker.Close() })
		tp := fmt.Sprintf("ticks_%d", time.Now().UnixNano())

		var mu sync.Mutex
		handled := map[string]int{}
		coldLate := 0 // cold messages handled after the clock moved
		total := 0
		opts := []fxbus.SubscribeOption{fxbus.InFlight(8), fxbus.Lookahead(4096)}
		if limited {
			opts = append(opts, fxbus.RateLimit(limit100PerKey))
		}
		var buses []*fxbus.Bus
		for range 2 { // two replicas: one consumer group, one budget, one clock
			bus, err := fxbus.New(fxbus.Config{
				Publisher: broker, Subscriber: broker.Group("svc"),
				Now: clock.Now, After: clock.After, Limiter: limiter,
			}, nil, []fxbus.Subscription{fxbus.NewSubscription[Tick](tp, opts...)})
			require.NoError(t, err)
			m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(bus), fxcqrs.WithEventHandlers(tickFunc(func(_ context.Context, e Tick) error {
				mu.Lock()
				defer mu.Unlock()
				handled[e.Key]++
				total++
				if e.Key[0] == 'c' && clock.Now().After(start) {
					coldLate++
				}
				return nil
			})))
			require.NoError(t, err)
			require.NoError(t, bus.Start(context.Background(), m))
			buses = append(buses, bus)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				assert.NoError(t, bus.Stop(ctx))
				assert.NoError(t, m.Stop(ctx))
			})
		}
		publish := func(key string, seq int) {
			payload, err := json.Marshal(Tick{Key: key, Seq: seq})
			require.NoError(t, err)
			msg := message.NewMessage(fmt.Sprintf("%s-%d", key, seq), payload)
			msg.Metadata.Set(fxbus.MetadataKey, key)
			require.NoError(t, broker.Publish(tp, msg))
		}
		every := hot / (cold * coldKeys) // the cold keys' messages among the hot keys' backlog
		for i := range hot {
			for k := range hotKeys {
				publish(fmt.Sprintf("h%d", k), i)
			}
			if i%every == 0 && i/every < cold*coldKeys {
				publish(fmt.Sprintf("c%d", (i/every)%coldKeys), i)
			}
		}
		all := hot*hotKeys + cold*coldKeys
		settled := func() bool { // all done that can be, at the clock's time
			mu.Lock()
			defer mu.Unlock()
			if !limited {
				return total == all
			}
			held := int64(total)
			for _, b := range buses {
				held += b.Stats().InFlight
			}
			return held >= int64(all) && limiter.woken.Load() == 0 && limiter.busy.Load() == 0 && int64(total) == limiter.granted.Load()
		}
		wait := func(what string) {
			t.Helper()
			require.Eventually(t, settled, 2*time.Minute, time.Millisecond, what)
		}
		wait("the first messages, the clock still")
		mu.Lock()
		for k := range coldKeys {
			assert.Equal(t, cold, handled[fmt.Sprintf("c%d", k)], "a cold key, handled with the clock still")
		}
		mu.Unlock()
		const step = 500 * time.Millisecond // a whole number of steps in the span, each 50 of a key's messages
		for clock.Now().Before(start.Add(time.Duration(seconds) * time.Second)) {
			clock.Advance(step)
			wait("the messages the budget let go")
		}
		mu.Lock()
		by10s = map[string]int{}
		for k := range hotKeys {
			by10s[fmt.Sprintf("h%d", k)] = handled[fmt.Sprintf("h%d", k)]
		}
		mu.Unlock()
		for {
			mu.Lock()
			done := total == all
			mu.Unlock()
			if done {
				break
			}
			clock.Advance(step)
			wait("the rest, as the budget lets them go")
		}
		assert.Zero(t, coldLate, "no cold message waited for the clock")
		return by10s
	}
	forEachDatabase(t, func(t *testing.T, d database) {
		seconds := 10
		if d.Dialect != fxoutbox.PostgreSQL {
			seconds = 2
		}
		most := 50 + 100*seconds // the burst, and the rate over the span
		t.Run("limited", func(t *testing.T) {
			for key, n := range run(t, d, true, seconds) {
				assert.LessOrEqual(t, n, most, "key %s in %d s", key, seconds)
				assert.GreaterOrEqual(t, n, most-50, "key %s in %d s: the budget is used", key, seconds)
				t.Logf("key %s: %d handled in %d s", key, n, seconds)
			}
		})
		t.Run("without the limit", func(t *testing.T) {
			for key, n := range run(t, d, false, seconds) {
				assert.Greater(t, n, most, "key %s: the check would fail", key)
			}
		})
	})
}

// Under fx, SharedRateLimits gives the bus the outbox's limiter: its
// budgets are rows of the outbox's database.
func TestSharedRateLimitsUnderFx(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	var limiter fxbus.Limiter
	app := fxtest.New(t,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite}),
		fxoutbox.SharedRateLimits,
		fx.Populate(&limiter),
	)
	app.RequireStart()
	defer app.RequireStop()
	require.IsType(t, &fxoutbox.SharedLimiter{}, limiter)
	now := time.Unix(1_700_000_000, 0)
	lim := fxbus.Limit{Per: fxbus.PerKey, Rate: 1, Every: time.Second, Burst: 1}
	wait, err := limiter.Take(context.Background(), "k", lim, now)
	require.NoError(t, err)
	assert.Zero(t, wait, "the burst")
	wait, err = limiter.Take(context.Background(), "k", lim, now)
	require.NoError(t, err)
	assert.Positive(t, wait, "over the budget")
	assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_limits"), "the budget's row in the outbox's database")
}
