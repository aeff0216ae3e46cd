package benchmarks

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
)

// gate holds event handlers until released and counts them.
type gate struct {
	running atomic.Int64
	ran     atomic.Int64
	release chan struct{}
}

func (g *gate) Handle(context.Context, Event) error {
	g.running.Add(1)
	<-g.release
	g.running.Add(-1)
	g.ran.Add(1)
	return nil
}

// waitFor polls the mediator's counters until cond holds; it bounds the
// wait, it does not measure anything.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// queue100k emits 100,000 events under limit 4 with handlers held, and
// returns, while they wait, the goroutines and heap bytes they cost.
func queue100k(tb testing.TB) (goroutines int, bytesPerWaiting float64, waiting int) {
	const events, lim = 100_000, 4
	g := &gate{release: make(chan struct{})}
	m, err := fxcqrs.New(limit(lim), fxcqrs.WithCommandHandlers(EmitHandler{N: events}), fxcqrs.WithEventHandlers(g))
	must(tb, err)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()

	done := make(chan error, 1)
	go func() { done <- fxcqrs.Exec(context.Background(), m, Cmd{}) }()
	waitFor(tb, "the queue full", func() bool {
		st := m.Stats().Events
		return st.Running == lim && st.Waiting == events-lim
	})
	runtime.GC()
	runtime.ReadMemStats(&after)
	goroutines = runtime.NumGoroutine() - goroutinesBefore
	waiting = m.Stats().Events.Waiting
	bytesPerWaiting = float64(after.HeapAlloc-before.HeapAlloc) / float64(waiting)

	close(g.release)
	must(tb, <-done)
	must(tb, m.Stop(context.Background()))
	if g.ran.Load() != events {
		tb.Fatalf("ran %d of %d", g.ran.Load(), events)
	}
	return goroutines, bytesPerWaiting, waiting
}

// TestWaitingEventsCostNoGoroutines: 100,000 events waiting for 4 slots
// cost the caller's goroutine and the helpers, whatever the queue.
func TestWaitingEventsCostNoGoroutines(t *testing.T) {
	goroutines, perEvent, waiting := queue100k(t)
	// The caller's goroutine runs one slot; helpers run the other three.
	if goroutines > 4+1 {
		t.Fatalf("%d goroutines for %d waiting events under limit 4", goroutines, waiting)
	}
	t.Logf("100,000 events under limit 4: %d goroutines, %.0f heap bytes per waiting event", goroutines, perEvent)
}

// BenchmarkWaitingEvents reports what a waiting event costs.
func BenchmarkWaitingEvents(b *testing.B) {
	var goroutines int
	var perEvent float64
	for b.Loop() {
		goroutines, perEvent, _ = queue100k(b)
	}
	b.ReportMetric(float64(goroutines), "goroutines")
	b.ReportMetric(perEvent, "B/waiting-event")
}

// BenchmarkThroughput: event invocations per second on all cores, each
// call emitting 16 events to a no-op handler.
func BenchmarkThroughput(b *testing.B) {
	const perCall = 16
	for _, tc := range []struct {
		name string
		cfg  fxcqrs.Config
	}{
		{"concurrent-limit=2", limit(2)},
		{"concurrent-limit=16", limit(16)},
		{"sequential", fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: true}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := newMediator(b, tc.cfg, fxcqrs.WithCommandHandlers(EmitHandler{N: perCall}), fxcqrs.WithEventHandlers(NopEventHandler{}))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := fxcqrs.Exec(context.Background(), m, Cmd{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*perCall)/b.Elapsed().Seconds(), "invocations/s")
		})
	}
}
