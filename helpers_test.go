package fxcqrs_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/require"
)

// Messages used across the tests.
type (
	PlaceOrder  struct{ ID int }
	Receipt     struct{ ID int }
	CancelOrder struct{ ID int }
	OrderPlaced struct{ ID int }
	Shipped     struct{ ID int }
	Audited     struct{ ID int }
	Notified    struct{ ID int }
)

// requestFunc, commandFunc and eventFunc adapt functions to handlers.
type requestFunc[Req, Res any] func(context.Context, Req) (Res, error)

func (f requestFunc[Req, Res]) Handle(ctx context.Context, r Req) (Res, error) { return f(ctx, r) }

type commandFunc[Cmd any] func(context.Context, Cmd) error

func (f commandFunc[Cmd]) Handle(ctx context.Context, c Cmd) error { return f(ctx, c) }

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// emitAll is a command handler that emits the given events.
func emitAll[Cmd any](events ...func(ctx context.Context)) commandFunc[Cmd] {
	return func(ctx context.Context, _ Cmd) error {
		for _, emit := range events {
			emit(ctx)
		}
		return nil
	}
}

func emit[E any](e E) func(ctx context.Context) {
	return func(ctx context.Context) { fxcqrs.Emit(ctx, e) }
}

// newMediator makes a mediator and stops it when the test ends.
func newMediator(t testing.TB, cfg fxcqrs.Config, opts ...fxcqrs.Option) *fxcqrs.Mediator {
	t.Helper()
	m, err := fxcqrs.New(cfg, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, m.Stop(ctx))
	})
	return m
}

func limit(n int) fxcqrs.Config {
	return fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: n}}
}

// eventModes are the ways Config.Events can process events, for tests
// that must hold in each.
func eventModes() map[string]fxcqrs.Config {
	return map[string]fxcqrs.Config{"limit 1": limit(1), "limit 3": limit(3), "sequential": sequential()}
}

func sequential() fxcqrs.Config {
	return fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: true}}
}

// gauge measures how many invocations run at once.
type gauge struct {
	mu      sync.Mutex
	cur     int
	peak    int
	total   int
	changed chan struct{} // closed and replaced on every change
}

func newGauge() *gauge { return &gauge{changed: make(chan struct{})} }

func (g *gauge) enter() {
	g.mu.Lock()
	g.cur++
	g.total++
	g.peak = max(g.peak, g.cur)
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

func (g *gauge) leave() {
	g.mu.Lock()
	g.cur--
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

func (g *gauge) snapshot() (cur, peak, total int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cur, g.peak, g.total
}

// waitFor blocks until cond holds on the gauge, or fails the test.
func (g *gauge) waitFor(t testing.TB, what string, cond func(cur, peak, total int) bool) {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		g.mu.Lock()
		ok := cond(g.cur, g.peak, g.total)
		ch := g.changed
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			cur, peak, total := g.snapshot()
			t.Fatalf("timed out waiting for %s: cur=%d peak=%d total=%d", what, cur, peak, total)
		}
	}
}

// waitUntil polls a condition that has no channel to wait on (the
// mediator's own counters); it fails the test after 10s. Polling here
// waits for a state, it never asserts on timing.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// blocking returns an event handler that enters g, waits for release, and
// leaves g.
func blocking[E any](g *gauge, release <-chan struct{}) eventFunc[E] {
	return func(ctx context.Context, _ E) error {
		g.enter()
		defer g.leave()
		<-release
		return nil
	}
}

// recorder records the order in which handlers ran.
type recorder struct {
	mu    sync.Mutex
	order []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.order = append(r.order, s)
	r.mu.Unlock()
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.order...)
}
