package fxcqrs_test

import (
	"context"
	"errors"
	"iter"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
)

// The stream load test: concurrent streams whose handlers emit a few events
// before each item and after the last, whose event handlers fail at
// random, and whose consumers break early or cancel at random. For every
// delivered item, each event emitted before it ran exactly once or is in
// that item's error; no event of an item that was never produced ran.

type (
	slReq struct {
		n    int
		s    *slStream
		fail int // percent of event invocations that fail
	}
	slEvent struct {
		ID   int64
		fail bool
	}
)

// slStream records, per item (1-based; 0 is "after the last item"), the
// events emitted before it.
type slStream struct {
	mu     sync.Mutex
	events map[int][]int64
}

type slWorld struct {
	nextID atomic.Int64
	mu     sync.Mutex
	ran    map[int64]int
	gauge  *gauge
}

func (w *slWorld) handler() streamFunc[slReq, int] {
	return func(ctx context.Context, r slReq) func(func(int, error) bool) {
		return func(yield func(int, error) bool) {
			emit := func(item int) {
				for range 1 + int(w.nextID.Load()%3) {
					id := w.nextID.Add(1)
					r.s.mu.Lock()
					r.s.events[item] = append(r.s.events[item], id)
					r.s.mu.Unlock()
					fxcqrs.Emit(ctx, slEvent{ID: id, fail: int(id*7919%100) < r.fail})
				}
			}
			for i := 1; i <= r.n; i++ {
				emit(i)
				if !yield(i, nil) {
					return
				}
			}
			emit(0)
		}
	}
}

func (w *slWorld) eventHandler(ctx context.Context, e slEvent) error {
	w.gauge.enter()
	defer w.gauge.leave()
	w.mu.Lock()
	w.ran[e.ID]++
	w.mu.Unlock()
	if e.fail {
		return errors.New("event failed")
	}
	return nil
}

func TestStreamLoad(t *testing.T) {
	t.Parallel()
	streams := 600
	if testing.Short() {
		streams = 100
	}
	for _, tc := range []struct {
		name  string
		cfg   fxcqrs.EventConfig
		limit int
	}{{"limit 10", fxcqrs.EventConfig{}, 10}, {"limit 2", fxcqrs.EventConfig{MaxConcurrentHandlers: 2}, 2}, {"sequential", fxcqrs.EventConfig{Sequential: true}, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := &slWorld{ran: map[int64]int{}, gauge: newGauge()}
			m := newMediator(t, fxcqrs.Config{StreamEvents: tc.cfg},
				fxcqrs.WithStreamHandlers(w.handler()),
				fxcqrs.WithEventHandlers(eventFunc[slEvent](w.eventHandler)))
			var wg sync.WaitGroup
			var delivered atomic.Int64
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
					for range streams / 16 {
						delivered.Add(int64(runStream(t, w, m, rng)))
					}
				}()
			}
			wg.Wait()
			if _, peak, _ := w.gauge.snapshot(); tc.limit > 0 && peak > tc.limit {
				t.Errorf("peak %d above the limit %d", peak, tc.limit)
			}
			if st := m.Stats(); st.InFlight != 0 {
				t.Errorf("not idle: %+v", st)
			}
			t.Logf("%s: %d streams, %d items delivered", tc.name, streams, delivered.Load())
		})
	}
}

// runStream consumes one stream as its plan says and checks it; it returns
// how many items were delivered.
func runStream(t *testing.T, w *slWorld, m *fxcqrs.Mediator, rng *rand.Rand) int {
	s := &slStream{events: map[int][]int64{}}
	req := slReq{n: 1 + rng.IntN(6), s: s, fail: rng.IntN(30)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	breakAt, cancelAt := -1, -1
	switch rng.IntN(4) {
	case 0:
		breakAt = 1 + rng.IntN(req.n)
	case 1:
		cancelAt = 1 + rng.IntN(req.n)
	}

	type elem struct {
		item int
		err  error
	}
	var got []elem
	seq := fxcqrs.Stream[int](ctx, m, req)
	var next func() (int, error, bool)
	var stop func()
	next, stop = iter.Pull2(seq)
	defer stop()
	for {
		item, err, ok := next()
		if !ok {
			break
		}
		got = append(got, elem{item, err})
		if item == breakAt {
			break
		}
		if item == cancelAt {
			cancel()
		}
	}
	stop() // ends the stream (and the call) before the accounting

	w.mu.Lock()
	defer w.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	produced := map[int]bool{}
	for _, e := range got {
		reported := map[int64]fxcqrs.EventFailure{}
		var evErr *fxcqrs.EventError
		if errors.As(e.err, &evErr) {
			for _, f := range evErr.Failures {
				reported[f.Event.(slEvent).ID] = f
			}
		} else if e.err != nil {
			if !errors.Is(e.err, context.Canceled) || e.item != 0 {
				t.Errorf("unexpected element (%d, %v)", e.item, e.err)
			}
			continue
		}
		produced[e.item] = true
		for _, id := range s.events[e.item] {
			f, isReported := reported[id]
			switch ran := w.ran[id]; {
			case ran > 1:
				t.Errorf("event %d ran %d times", id, ran)
			case ran == 0 && (!isReported || f.Started):
				t.Errorf("event %d of item %d never ran and was not reported as such", id, e.item)
			case ran == 1 && isReported != (id*7919%100 < int64(req.fail)):
				t.Errorf("event %d of item %d: reported=%v", id, e.item, isReported)
			}
			delete(reported, id)
		}
		for id := range reported {
			t.Errorf("item %d reported event %d it did not emit", e.item, id)
		}
	}
	completed := breakAt < 0 && cancelAt < 0
	for item, ids := range s.events {
		switch {
		case produced[item]:
			// checked above, against the item's element
		case item == 0 && completed:
			// Trailing events without a final element: all ran and succeeded.
			for _, id := range ids {
				if w.ran[id] != 1 || id*7919%100 < int64(req.fail) {
					t.Errorf("trailing event %d: ran %d times, failing=%v, no final element", id, w.ran[id], id*7919%100 < int64(req.fail))
				}
			}
		default:
			// A stopped handler emits nothing more: every item it emitted
			// for was delivered.
			t.Errorf("events %v emitted for item %d, which was never delivered (break %d, cancel %d)", ids, item, breakAt, cancelAt)
		}
	}
	return len(produced)
}
