package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
)

// The reliability harness: calls whose handlers follow a random plan
// (fan-out, follow-ups, nested calls, errors, panics, slow work,
// cancellations), and a checker that accounts for every invocation of every
// call: it ran exactly once, or the call's error reports it; and no more
// than the limit ran at once.

type (
	loadCmd struct{ call *loadCall }
	loadEvA struct {
		ID    int64
		Depth int
		call  *loadCall
	}
	loadEvB struct {
		ID    int64
		Depth int
		call  *loadCall
	}
	loadNestedCmd struct{}
	loadNestedEv  struct{}
)

// Three handlers: two of loadEvA, one of loadEvB.
type (
	loadHA1 struct{ w *loadWorld }
	loadHA2 struct{ w *loadWorld }
	loadHB  struct{ w *loadWorld }
)

func (h loadHA1) Handle(ctx context.Context, e loadEvA) error {
	return h.w.handle(ctx, nameHA1, e.ID, e.Depth, e.call)
}

func (h loadHA2) Handle(ctx context.Context, e loadEvA) error {
	return h.w.handle(ctx, nameHA2, e.ID, e.Depth, e.call)
}

func (h loadHB) Handle(ctx context.Context, e loadEvB) error {
	return h.w.handle(ctx, nameHB, e.ID, e.Depth, e.call)
}

func fullName[T any]() string {
	t := reflect.TypeFor[T]()
	return t.PkgPath() + "." + t.Name()
}

var (
	nameHA1     = fullName[loadHA1]()
	nameHA2     = fullName[loadHA2]()
	nameHB      = fullName[loadHB]()
	handlersOfA = []string{nameHA1, nameHA2}
	handlersOfB = []string{nameHB}
	errLoad     = errors.New("load: handler failed")
	errRequest  = errors.New("load: request failed")
)

// loadRates are percentages of the plan.
type loadRates struct {
	fail, panic, slow, nested, followUp int
	maxFanOut                           int
}

type loadWorld struct {
	m     *fxcqrs.Mediator
	rates loadRates
	seed  maphash.Seed
	gauge *gauge // top-level invocations only: nested ones share a slot

	nextID atomic.Int64
	mu     sync.Mutex
	invs   map[invKey]*invRecord

	// Totals, for the report.
	calls, invocations, injected atomic.Int64
}

type invKey struct {
	id      int64
	handler string
}

type invRecord struct {
	ran       int
	failed    bool
	followUps []emitted
}

type emitted struct {
	id int64
	a  bool // loadEvA, else loadEvB
}

type loadCall struct {
	publish     bool // a Publish of one event instead of an Exec
	fanOut      int
	failRequest bool
	events      []emitted
	cancel      context.CancelFunc
	cancelAt    int64 // cancel the call's context when this many invocations ran
	ran         atomic.Int64
}

func newWorld(rates loadRates) *loadWorld {
	return &loadWorld{rates: rates, seed: maphash.MakeSeed(), gauge: newGauge(), invs: map[invKey]*invRecord{}}
}

func newLoadWorld(t testing.TB, cfg fxcqrs.Config, rates loadRates, opts ...fxcqrs.Option) *loadWorld {
	w := newWorld(rates)
	w.m = newMediator(t, cfg, append(opts, fxcqrs.WithCommandHandlers(w.commandHandlers()...), fxcqrs.WithEventHandlers(w.eventHandlers()...))...)
	return w
}

// waitingGauge is an observer's count of invocations waiting for a slot,
// as the otel module keeps it: up when queued, down when a queued one
// starts or is dropped. It must never go below zero and must end at zero.
type waitingGauge struct {
	fxcqrs.NopObserver
	waiting  atomic.Int64
	negative atomic.Bool
}

func (g *waitingGauge) InvocationQueued(context.Context, fxcqrs.InvocationQueued) {
	g.waiting.Add(1)
}

func (g *waitingGauge) InvocationStarted(ctx context.Context, p fxcqrs.InvocationStarted) context.Context {
	if p.Queued && g.waiting.Add(-1) < 0 {
		g.negative.Store(true)
	}
	return ctx
}

func (g *waitingGauge) InvocationFinished(_ context.Context, p fxcqrs.InvocationFinished) {
	if !p.Started && p.Queued && g.waiting.Add(-1) < 0 {
		g.negative.Store(true)
	}
}

func (w *loadWorld) commandHandlers() []any {
	return []any{
		commandFunc[loadCmd](w.handleRequest),
		commandFunc[loadNestedCmd](func(ctx context.Context, _ loadNestedCmd) error {
			fxcqrs.Emit(ctx, loadNestedEv{})
			return nil
		}),
	}
}

func (w *loadWorld) eventHandlers() []any {
	return []any{
		loadHA1{w},
		loadHA2{w},
		loadHB{w},
		eventFunc[loadNestedEv](func(context.Context, loadNestedEv) error { return nil }),
	}
}

// pct decides, from the invocation's identity, whether a planned thing
// happens: the same invocation always decides the same way.
func (w *loadWorld) pct(id int64, handler, what string, p int) bool {
	var h maphash.Hash
	h.SetSeed(w.seed)
	_, _ = fmt.Fprint(&h, id, handler, what)
	return int(h.Sum64()%100) < p
}

func (w *loadWorld) emit(ctx context.Context, depth int, call *loadCall, a bool) emitted {
	e := emitted{id: w.nextID.Add(1), a: a}
	if a {
		fxcqrs.Emit(ctx, loadEvA{ID: e.id, Depth: depth, call: call})
	} else {
		fxcqrs.Emit(ctx, loadEvB{ID: e.id, Depth: depth, call: call})
	}
	return e
}

func (w *loadWorld) handleRequest(ctx context.Context, c loadCmd) error {
	for i := range c.call.fanOut {
		c.call.events = append(c.call.events, w.emit(ctx, 1, c.call, i%3 != 2))
	}
	if c.call.failRequest {
		return errRequest
	}
	return nil
}

func (w *loadWorld) handle(ctx context.Context, handler string, id int64, depth int, call *loadCall) error {
	w.gauge.enter()
	defer w.gauge.leave()
	w.invocations.Add(1)
	rec := &invRecord{ran: 1}
	defer func() { // before a panic leaves, too
		w.mu.Lock()
		if prev := w.invs[invKey{id, handler}]; prev != nil {
			prev.ran++
		} else {
			w.invs[invKey{id, handler}] = rec
		}
		w.mu.Unlock()
	}()
	r := w.rates
	if depth < 3 {
		for i := range 2 {
			if w.pct(id, handler, fmt.Sprint("follow", i), r.followUp) {
				rec.followUps = append(rec.followUps, w.emit(ctx, depth+1, call, i == 0))
			}
		}
	}
	if w.pct(id, handler, "nested", r.nested) {
		if err := fxcqrs.Exec(ctx, w.m, loadNestedCmd{}); err != nil {
			rec.failed = true // e.g. its inline events found the context cancelled
			return err
		}
	}
	if w.pct(id, handler, "slow", r.slow) {
		time.Sleep(time.Duration(id%200) * time.Microsecond)
	}
	if call.cancel != nil && call.ran.Add(1) == call.cancelAt {
		call.cancel()
	}
	if w.pct(id, handler, "panic", r.panic) {
		w.injected.Add(1)
		rec.failed = true
		panic(fmt.Sprint("load panic ", id))
	}
	if w.pct(id, handler, "fail", r.fail) {
		w.injected.Add(1)
		rec.failed = true
		return errLoad
	}
	return nil
}

// run makes one call and checks its accounting.
func (w *loadWorld) run(t testing.TB, call *loadCall) {
	ctx := context.Background()
	if call.cancelAt > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		call.cancel = cancel
	}
	w.calls.Add(1)
	var err error
	if call.publish {
		e := emitted{id: w.nextID.Add(1), a: true}
		call.events = []emitted{e}
		err = fxcqrs.Publish(ctx, w.m, loadEvA{ID: e.id, Depth: 1, call: call})
	} else {
		err = fxcqrs.Exec(ctx, w.m, loadCmd{call: call})
	}
	w.check(t, call, err)
}

func (w *loadWorld) check(t testing.TB, call *loadCall, err error) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if call.failRequest {
		if !errors.Is(err, errRequest) {
			t.Errorf("failed request: got %v", err)
		}
		for _, e := range call.events {
			w.mustNotRun(t, e, "an event of a failed request")
		}
		return
	}
	reported := map[invKey]fxcqrs.EventFailure{}
	var evErr *fxcqrs.EventError
	switch {
	case errors.As(err, &evErr):
		for _, f := range evErr.Failures {
			var id int64
			switch ev := f.Event.(type) {
			case loadEvA:
				id = ev.ID
			case loadEvB:
				id = ev.ID
			default:
				t.Errorf("unexpected event in failures: %#v", f.Event)
				continue
			}
			k := invKey{id, f.Handler}
			if _, dup := reported[k]; dup {
				t.Errorf("invocation %v reported twice", k)
			}
			reported[k] = f
		}
	case err != nil:
		t.Errorf("call failed with %v", err)
		return
	}
	live := append([]emitted(nil), call.events...)
	for len(live) > 0 {
		e := live[0]
		live = live[1:]
		for _, h := range handlersFor(e) {
			k := invKey{e.id, h}
			rec := w.invs[k]
			f, isReported := reported[k]
			delete(reported, k)
			switch {
			case rec == nil:
				if !isReported || f.Started || !errors.Is(f.Err, fxcqrs.ErrNotStarted) {
					t.Errorf("invocation %v never ran and was not reported as such (got %+v)", k, f)
				}
				continue
			case rec.ran != 1:
				t.Errorf("invocation %v ran %d times", k, rec.ran)
			case rec.failed && (!isReported || !f.Started):
				t.Errorf("invocation %v failed but was reported as %+v", k, f)
			case !rec.failed && isReported:
				t.Errorf("invocation %v succeeded but was reported as %+v", k, f)
			}
			if rec.failed {
				for _, f := range rec.followUps {
					w.mustNotRun(t, f, "a follow-up of a failed handler")
				}
			} else {
				live = append(live, rec.followUps...)
			}
		}
	}
	for k, f := range reported {
		t.Errorf("reported invocation %v belongs to no live event: %v", k, f.Err)
	}
}

func (w *loadWorld) mustNotRun(t testing.TB, e emitted, what string) {
	t.Helper()
	for _, h := range handlersFor(e) {
		if rec := w.invs[invKey{e.id, h}]; rec != nil {
			t.Errorf("%s ran: %v", what, invKey{e.id, h})
		}
	}
}

func handlersFor(e emitted) []string {
	if e.a {
		return handlersOfA
	}
	return handlersOfB
}

// TestLoad: thousands of concurrent calls with random plans, in both modes
// and under several limits. Every invocation is accounted for; the limit
// holds; -race and goleak watch the rest.
func TestLoad(t *testing.T) {
	t.Parallel()
	calls := 1500
	if testing.Short() {
		calls = 200
	}
	rates := loadRates{fail: 8, panic: 3, slow: 10, nested: 5, followUp: 25, maxFanOut: 6}
	for _, tc := range []struct {
		name     string
		cfg      fxcqrs.Config
		limit    int
		observed bool
	}{
		{"limit 1", limit(1), 1, false},
		{"limit 3", limit(3), 3, false},
		{"limit 16", limit(16), 16, false},
		{"sequential", sequential(), 0, false},
		// Under an observer, invocations that find a slot free reserve it
		// when queued: the same accounting must hold, and the observer's
		// waiting gauge must balance.
		{"limit 1 observed", limit(1), 1, true},
		{"limit 3 observed", limit(3), 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []fxcqrs.Option
			gauge := &waitingGauge{}
			if tc.observed {
				opts = append(opts, fxcqrs.WithObserver(gauge))
				t.Cleanup(func() {
					assert.False(t, gauge.negative.Load(), "the waiting gauge went below zero")
					assert.Zero(t, gauge.waiting.Load(), "the waiting gauge did not return to zero")
				})
			}
			w := newLoadWorld(t, tc.cfg, rates, opts...)
			start := time.Now()
			const workers = 32
			var wg sync.WaitGroup
			for i := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
					for range calls / workers {
						call := &loadCall{
							publish:     rng.IntN(100) < 15,
							fanOut:      rng.IntN(rates.maxFanOut + 1),
							failRequest: rng.IntN(100) < 5,
						}
						call.failRequest = call.failRequest && !call.publish
						if rng.IntN(100) < 10 {
							call.cancelAt = 1 + rng.Int64N(4)
						}
						w.run(t, call)
					}
				}()
			}
			wg.Wait()
			_, peak, _ := w.gauge.snapshot()
			if tc.limit > 0 && peak > tc.limit {
				t.Errorf("peak %d above the limit %d", peak, tc.limit)
			}
			if st := w.m.Stats(); st.InFlight != 0 || st.Events.Running != 0 || st.Events.Waiting != 0 {
				t.Errorf("not idle after the load: %+v", st)
			}
			t.Logf("%s: %d calls, %d invocations, %d failures injected, peak %d (limit %d; 0: sequential, no limit), %v",
				tc.name, w.calls.Load(), w.invocations.Load(), w.injected.Load(), peak, tc.limit, time.Since(start).Round(time.Millisecond))
		})
	}
}

// FuzzMediator: the fuzzer writes the script; the checker is the load
// test's. The seed corpus runs as an ordinary test.
func FuzzMediator(f *testing.F) {
	f.Add(uint8(1), false, uint8(4), uint8(10), uint8(5), uint8(30), uint8(5), uint8(0), []byte{3, 1, 4, 1, 5})
	f.Add(uint8(3), false, uint8(50), uint8(20), uint8(10), uint8(40), uint8(20), uint8(2), []byte{6, 6, 0, 2})
	f.Add(uint8(2), true, uint8(0), uint8(0), uint8(0), uint8(50), uint8(0), uint8(1), []byte{9, 9, 9})
	f.Add(uint8(8), false, uint8(100), uint8(0), uint8(0), uint8(0), uint8(100), uint8(3), []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, lim uint8, seq bool, fail, panics, nested, followUp, slow, cancelAt uint8, fanOuts []byte) {
		if len(fanOuts) > 16 {
			fanOuts = fanOuts[:16]
		}
		cfg := limit(1 + int(lim%8))
		if seq {
			cfg = sequential()
		}
		rates := loadRates{
			fail: int(fail % 101), panic: int(panics % 101), nested: int(nested % 101),
			followUp: int(followUp % 60), slow: int(slow % 101), maxFanOut: 8,
		}
		w := newLoadWorld(t, cfg, rates)
		var wg sync.WaitGroup
		for i, b := range fanOuts {
			call := &loadCall{fanOut: int(b % 9), failRequest: b%17 == 16, publish: b%7 == 3}
			call.failRequest = call.failRequest && !call.publish
			if cancelAt > 0 && i%2 == 0 {
				call.cancelAt = int64(cancelAt % 5)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.run(t, call)
			}()
		}
		wg.Wait()
		if _, peak, _ := w.gauge.snapshot(); !seq && peak > 1+int(lim%8) {
			t.Errorf("peak %d above the limit %d", peak, 1+int(lim%8))
		}
	})
}
