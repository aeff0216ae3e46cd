package fxcqrs_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func background(limit, queue int) fxcqrs.Config {
	return fxcqrs.Config{Events: fxcqrs.EventConfig{Background: true, MaxConcurrentHandlers: limit, QueueSize: queue}}
}

// TestBackgroundReturnsBeforeEvents: Send returns right after the handler;
// Stop drains the events.
func TestBackgroundReturnsBeforeEvents(t *testing.T) {
	t.Parallel()
	g := newGauge()
	release := make(chan struct{})
	m, err := fxcqrs.New(background(2, 0),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{}), emit(Shipped{}))),
		fxcqrs.WithEventHandlers(blocking[OrderPlaced](g, release), blocking[Shipped](g, release)),
	)
	require.NoError(t, err)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	g.waitFor(t, "both events running after Exec returned", func(cur, _, _ int) bool { return cur == 2 })
	assert.Equal(t, 1, m.Stats().InFlight, "the background batch is in flight")

	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop(context.Background()) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned before background events finished")
	default:
	}
	close(release)
	require.NoError(t, <-stopped)
	_, _, total := g.snapshot()
	assert.Equal(t, 2, total)
}

// TestBackgroundBackpressure: a full queue makes the caller wait, and its
// context bounds the wait; nothing is dropped silently.
func TestBackgroundBackpressure(t *testing.T) {
	t.Parallel()
	g := newGauge()
	release := make(chan struct{})
	m := newMediator(t, background(1, 2),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{}))),
		fxcqrs.WithEventHandlers(blocking[OrderPlaced](g, release)),
	)
	ctx := context.Background()
	require.NoError(t, fxcqrs.Exec(ctx, m, PlaceOrder{})) // runs
	g.waitFor(t, "the first running", func(cur, _, _ int) bool { return cur == 1 })
	require.NoError(t, fxcqrs.Exec(ctx, m, PlaceOrder{})) // queued 1/2
	require.NoError(t, fxcqrs.Exec(ctx, m, PlaceOrder{})) // queued 2/2

	blocked := make(chan error, 1)
	go func() { blocked <- fxcqrs.Exec(ctx, m, PlaceOrder{}) }()

	cctx, cancel := context.WithCancel(ctx)
	refused := make(chan error, 1)
	go func() { refused <- fxcqrs.Exec(cctx, m, PlaceOrder{}) }()
	cancel()
	err := <-refused
	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr, "the caller learns its events were not queued")
	assert.ErrorIs(t, err, fxcqrs.ErrNotStarted)
	assert.ErrorIs(t, err, context.Canceled)

	select {
	case <-blocked:
		t.Fatal("a call got past a full queue")
	default:
	}
	close(release)
	require.NoError(t, <-blocked)
	require.NoError(t, m.Stop(ctx))
	_, peak, total := g.snapshot()
	assert.Equal(t, 4, total, "every queued event ran")
	assert.Equal(t, 1, peak)
}

// TestBackgroundFailuresReported: failures go to the log and to the
// application's hook, supplied through fx.
func TestBackgroundFailuresReported(t *testing.T) {
	t.Parallel()
	errMail := errors.New("mail down")
	core, logs := observer.New(zapcore.ErrorLevel)
	var (
		mu       sync.Mutex
		reported []*fxcqrs.EventError
		calls    atomic.Int32
		m        *fxcqrs.Mediator
	)
	app := fxtest.New(t,
		fxcqrs.Module,
		fx.Supply(background(0, 0), zap.New(core)),
		fx.Supply(fxcqrs.BackgroundErrorHandler(func(_ context.Context, err *fxcqrs.EventError) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		})),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] { return emitAll[PlaceOrder](emit(Notified{ID: 5})) }),
		fxcqrs.AsEventHandler(func() eventFunc[Notified] {
			return func(context.Context, Notified) error { calls.Add(1); return errMail }
		}),
		fx.Populate(&m),
	)
	app.RequireStart()
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}), "the caller does not wait for background events")
	app.RequireStop()

	assert.Equal(t, int32(1), calls.Load())
	require.Len(t, reported, 1)
	assert.ErrorIs(t, reported[0], errMail)
	assert.Equal(t, Notified{ID: 5}, reported[0].Failures[0].Event)
	assert.Equal(t, 1, logs.FilterMessage("background event handlers failed").Len())
}

// TestBackgroundStopDeadlineReportsQueued: events still queued when the
// stop deadline passes are reported through the hook.
func TestBackgroundStopDeadlineReportsQueued(t *testing.T) {
	t.Parallel()
	g := newGauge()
	release := make(chan struct{})
	reported := make(chan *fxcqrs.EventError, 4)
	m, err := fxcqrs.New(background(1, 0),
		fxcqrs.WithBackgroundErrorHandler(func(_ context.Context, err *fxcqrs.EventError) { reported <- err }),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{}), emit(OrderPlaced{}))),
		fxcqrs.WithEventHandlers(blocking[OrderPlaced](g, release)),
	)
	require.NoError(t, err)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	g.waitFor(t, "one running", func(cur, _, _ int) bool { return cur == 1 })
	waitUntil(t, "one queued", func() bool { return m.Stats().Events.Waiting == 1 })

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	require.Error(t, m.Stop(expired))
	close(release)
	evErr := <-reported
	require.Len(t, evErr.Failures, 1)
	assert.ErrorIs(t, evErr, fxcqrs.ErrStopped)
	require.NoError(t, m.Stop(context.Background()))
	_, _, total := g.snapshot()
	assert.Equal(t, 1, total)
}

// TestBackgroundQueueBoundHolds: many callers racing for a small queue
// never push it past QueueSize; the surplus waits, then everything runs.
func TestBackgroundQueueBoundHolds(t *testing.T) {
	t.Parallel()
	const callers, queue = 32, 4
	g := newGauge()
	release := make(chan struct{})
	m := newMediator(t, background(1, queue),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{}))),
		fxcqrs.WithEventHandlers(blocking[OrderPlaced](g, release)),
	)
	var wg sync.WaitGroup
	var returned atomic.Int32
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
			returned.Add(1)
		}()
	}
	// One runs, queue wait; the rest are held back by backpressure.
	waitUntil(t, "the queue full", func() bool {
		st := m.Stats().Events
		assert.LessOrEqual(t, st.Waiting, queue, "the bound holds while callers race")
		return st.Running == 1 && st.Waiting == queue && returned.Load() == 1+queue
	})
	for range 200 { // keep sampling while the surplus keeps trying
		require.LessOrEqual(t, m.Stats().Events.Waiting, queue)
	}
	close(release)
	wg.Wait()
	require.NoError(t, m.Stop(context.Background()))
	_, _, total := g.snapshot()
	assert.Equal(t, callers, total)
}

// TestBackgroundEventsKeepTheirValues: background events run after their
// call returned and its buffer went back to the pool, to be reused by the
// next calls' events. Each must still arrive with the value it was
// emitted with.
func TestBackgroundEventsKeepTheirValues(t *testing.T) {
	t.Parallel()
	const calls, perCall = 20, 4
	release := make(chan struct{})
	var (
		mu   sync.Mutex
		seen []int
	)
	m := newMediator(t, background(1, calls*perCall),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			for i := range perCall {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID*100 + i})
			}
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(_ context.Context, e OrderPlaced) error {
			if e.ID == 100 {
				<-release // hold the only slot while later calls reuse buffers
			}
			mu.Lock()
			seen = append(seen, e.ID)
			mu.Unlock()
			return nil
		})),
	)
	var want []int
	for c := 1; c <= calls; c++ {
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: c}))
		for i := range perCall {
			want = append(want, c*100+i)
		}
	}
	close(release)
	require.NoError(t, m.Stop(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, want, seen, "limit 1 runs them in emit order, each with its own value")
}

// Under Foreground, a call waits for its events even in background mode:
// the bus acknowledges a message only after its handlers ran.
func TestForegroundOverridesBackground(t *testing.T) {
	t.Parallel()
	var (
		entered  = make(chan struct{})
		release  = make(chan struct{})
		released atomic.Bool
		early    = make(chan bool, 1)
	)
	m := newMediator(t, background(1, 8),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error {
			close(entered)
			<-release
			return nil
		})),
	)
	go func() {
		err := fxcqrs.Publish(fxcqrs.Foreground(context.Background()), m, OrderPlaced{})
		early <- err == nil && !released.Load()
	}()
	<-entered
	// In background mode Publish would return while the handler is held
	// here; in the foreground it cannot return before the release.
	released.Store(true)
	close(release)
	assert.False(t, <-early, "Publish returned before its handler finished")
}
