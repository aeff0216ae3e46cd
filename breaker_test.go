package fxcqrs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"go.yaml.in/yaml/v3"
)

// clock is a breaker's clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// dependency is a handler's flaky dependency: it fails while down.
type dependency struct {
	down  atomic.Bool
	calls atomic.Int32
}

var errUnavailable = errors.New("payment provider unavailable")

func (d *dependency) call() error {
	d.calls.Add(1)
	if d.down.Load() {
		return errUnavailable
	}
	return nil
}

// breakerStates records the transitions an observer hears.
type breakerStates struct {
	fxcqrs.NopObserver
	mu     sync.Mutex
	states []string
}

func (o *breakerStates) BreakerStateChanged(_ context.Context, p fxcqrs.BreakerStateChanged) {
	o.mu.Lock()
	o.states = append(o.states, fmt.Sprintf("%s %s->%s", short(p.MessageType), p.From, p.To))
	o.mu.Unlock()
}

func (o *breakerStates) get() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.states...)
}

// The breaker's whole cycle, on an injected clock: closed until the
// threshold, open and failing fast without calling the handler, half-open
// after OpenDuration, open again on a failed probe, closed on a good one.
// Transitions are logged and reach the observer.
func TestBreakerCycle(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dep := &dependency{}
	obs := &breakerStates{}
	core, logs := observer.New(zapcore.WarnLevel)
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithLogger(zap.New(core)),
		fxcqrs.WithObserver(obs),
		fxcqrs.WithMiddleware(fxcqrs.Breaker(fxcqrs.BreakerConfig{ConsecutiveFailures: 3, OpenDuration: 10 * time.Second, Now: clk.Now})),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(context.Context, PlaceOrder) error { return dep.call() })),
	)
	exec := func() error { return fxcqrs.Exec(context.Background(), m, PlaceOrder{}) }

	dep.down.Store(true)
	for range 3 {
		require.ErrorIs(t, exec(), errUnavailable)
	}
	require.Equal(t, int32(3), dep.calls.Load())
	err := exec()
	require.ErrorIs(t, err, fxcqrs.ErrBreakerOpen, "open: fails fast")
	assert.Contains(t, err.Error(), "commandFunc")
	assert.Equal(t, int32(3), dep.calls.Load(), "without calling the handler")

	clk.advance(9 * time.Second)
	require.ErrorIs(t, exec(), fxcqrs.ErrBreakerOpen, "still open before OpenDuration")

	clk.advance(time.Second)
	require.ErrorIs(t, exec(), errUnavailable, "half-open: a probe goes through, and fails")
	require.ErrorIs(t, exec(), fxcqrs.ErrBreakerOpen, "open again")

	clk.advance(10 * time.Second)
	dep.down.Store(false)
	require.NoError(t, exec(), "a good probe")
	require.NoError(t, exec(), "closed again")
	assert.Equal(t, int32(6), dep.calls.Load())

	assert.Equal(t, []string{
		"PlaceOrder closed->open", "PlaceOrder open->half-open", "PlaceOrder half-open->open",
		"PlaceOrder open->half-open", "PlaceOrder half-open->closed",
	}, obs.get())
	opened := logs.FilterMessage("circuit breaker open").All()
	require.Len(t, opened, 2)
	assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.PlaceOrder", opened[0].ContextMap()["messageType"])
}

// A failure ratio over a rolling window, with a least number of calls;
// old outcomes leave the window.
func TestBreakerFailureRatio(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dep := &dependency{}
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithMiddleware(fxcqrs.Breaker(fxcqrs.BreakerConfig{FailureRatio: 0.5, MinRequests: 4, Window: 10 * time.Second, Now: clk.Now})),
		fxcqrs.WithRequestHandlers(requestFunc[PlaceOrder, Receipt](func(_ context.Context, c PlaceOrder) (Receipt, error) {
			return Receipt{ID: c.ID}, dep.call()
		})),
	)
	send := func() error { _, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{}); return err }

	dep.down.Store(true)
	require.Error(t, send())
	require.Error(t, send())
	require.Error(t, send(), "three failures: below MinRequests, still closed")
	clk.advance(11 * time.Second) // they leave the window
	dep.down.Store(false)
	require.NoError(t, send())
	require.NoError(t, send())
	dep.down.Store(true)
	require.Error(t, send())
	require.ErrorIs(t, send(), errUnavailable, "2 of 4 in the window: the call that makes it so still ran")
	require.ErrorIs(t, send(), fxcqrs.ErrBreakerOpen, "then it opened")
}

// Which errors count: not the caller's cancellation, not a nested call's
// event failures. And a breaker wraps a whole series of retries: Retry's
// attempts are one outcome.
func TestBreakerCountsOutcomesNotAttempts(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dep := &dependency{}
	m := newMediator(t, limit(1),
		fxcqrs.WithMiddleware(
			fxcqrs.Breaker(fxcqrs.BreakerConfig{ConsecutiveFailures: 2, Now: clk.Now}),
			fxcqrs.Retry(fxcqrs.RetryPolicy{Attempts: 3, Initial: time.Microsecond, Max: time.Microsecond}),
		),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return dep.call() })),
	)
	dep.down.Store(true)
	require.ErrorIs(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{}), errUnavailable)
	assert.Equal(t, int32(3), dep.calls.Load(), "three attempts")
	require.ErrorIs(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{}), errUnavailable, "one outcome so far: still closed")
	assert.Equal(t, int32(6), dep.calls.Load())
	require.ErrorIs(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{}), fxcqrs.ErrBreakerOpen)
	assert.Equal(t, int32(6), dep.calls.Load())

	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	cancelled := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithMiddleware(fxcqrs.Breaker(fxcqrs.BreakerConfig{ConsecutiveFailures: 1, Now: clk.Now})),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, _ PlaceOrder) error {
			calls.Add(1)
			cancel()
			return ctx.Err()
		})),
	)
	require.ErrorIs(t, fxcqrs.Exec(ctx, cancelled, PlaceOrder{}), context.Canceled)
	require.NoError(t, fxcqrs.Exec(context.Background(), cancelled, PlaceOrder{}),
		"the caller's cancellation did not trip a breaker at one failure")
	assert.Equal(t, int32(2), calls.Load())
}

func TestBreakerConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, fxcqrs.BreakerConfig{}.Validate())
	err := fxcqrs.BreakerConfig{ConsecutiveFailures: -1, FailureRatio: 2}.Validate()
	assert.ErrorContains(t, err, "ConsecutiveFailures (consecutiveFailures) must not be negative")
	assert.ErrorContains(t, err, "FailureRatio (failureRatio) must be between 0 and 1")
	_, err = fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithMiddleware(fxcqrs.Breaker(fxcqrs.BreakerConfig{FailureRatio: -1})),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(context.Context, PlaceOrder) error { return nil })),
	)
	assert.ErrorContains(t, err, "FailureRatio", "New checks the breaker's config")
}

// A breaker is configured from the application's file like the rest.
func TestBreakerConfigDecodes(t *testing.T) {
	t.Parallel()
	want := fxcqrs.BreakerConfig{ConsecutiveFailures: 3, FailureRatio: 0.5, MinRequests: 20, Window: 30 * time.Second, OpenDuration: time.Minute, HalfOpenProbes: 2}
	var fromJSON fxcqrs.BreakerConfig
	require.NoError(t, json.Unmarshal([]byte(`{"consecutiveFailures":3,"failureRatio":0.5,"minRequests":20,"window":"30s","openDuration":"1m","halfOpenProbes":2}`), &fromJSON))
	assert.Equal(t, want, fromJSON)
	var fromYAML fxcqrs.BreakerConfig
	require.NoError(t, yaml.Unmarshal([]byte("{consecutiveFailures: 3, failureRatio: 0.5, minRequests: 20, window: 30s, openDuration: 60000000000, halfOpenProbes: 2}"), &fromYAML))
	assert.Equal(t, want, fromYAML)
}

// A Breaker is a real middleware: placed inside Retry with WithOrder, it
// counts each attempt, where its default place counts the series as one
// outcome (TestBreakerCountsOutcomesNotAttempts).
func TestBreakerPlacedInsideRetryCountsAttempts(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dep := &dependency{}
	m := newMediator(t, limit(1),
		fxcqrs.WithMiddleware(
			fxcqrs.WithOrder(fxcqrs.Breaker(fxcqrs.BreakerConfig{ConsecutiveFailures: 2, Now: clk.Now}), fxcqrs.OrderRetry+1),
			fxcqrs.Retry(fxcqrs.RetryPolicy{Attempts: 3, Initial: time.Microsecond, Max: time.Microsecond}),
		),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return dep.call() })),
	)
	dep.down.Store(true)
	require.ErrorIs(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{}), fxcqrs.ErrBreakerOpen,
		"the third attempt finds the breaker open")
	assert.Equal(t, int32(2), dep.calls.Load(), "two attempts reached the handler")
}

// Called outside a mediator, a Breaker still keeps one breaker per
// handler.
func TestBreakerUnbound(t *testing.T) {
	t.Parallel()
	clk := newClock()
	mw := fxcqrs.Breaker(fxcqrs.BreakerConfig{ConsecutiveFailures: 1, Now: clk.Now})
	fail := func(context.Context) (any, error) { return nil, errUnavailable }
	_, err := mw.Handle(context.Background(), fxcqrs.Call{Handler: "a"}, fail)
	require.ErrorIs(t, err, errUnavailable)
	_, err = mw.Handle(context.Background(), fxcqrs.Call{Handler: "a"}, fail)
	require.ErrorIs(t, err, fxcqrs.ErrBreakerOpen)
	_, err = mw.Handle(context.Background(), fxcqrs.Call{Handler: "b"}, fail)
	require.ErrorIs(t, err, errUnavailable, "b has a breaker of its own")
}
