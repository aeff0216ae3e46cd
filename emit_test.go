package fxcqrs_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestEmitOutsideACallPanics(t *testing.T) {
	t.Parallel()
	assert.PanicsWithValue(t,
		"fxcqrs.Emit: the context comes from no mediator call: pass the ctx the handler received "+
			"(or fxcqrs.RecordEvents in a test); the event fxcqrs_test.Shipped would be lost",
		func() { fxcqrs.Emit(context.Background(), Shipped{}) })
}

// TestLateEmitIsLoggedAndCounted: a goroutine that outlives its handler
// cannot add to the finished call; its event is reported, not lost.
func TestLateEmitIsLoggedAndCounted(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.ErrorLevel)
	var leaked context.Context
	var shipped atomic.Int32
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithLogger(zap.New(core)),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, _ PlaceOrder) error {
			leaked = ctx
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(context.Context, Shipped) error {
			shipped.Add(1)
			return nil
		})),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	fxcqrs.Emit(leaked, Shipped{ID: 1})
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	assert.Zero(t, shipped.Load(), "the late event joined no call")

	assert.Equal(t, uint64(1), m.Stats().LateEmits)
	entries := logs.FilterMessage("event emitted after its handler returned; it is not processed").All()
	require.Len(t, entries, 1)
	assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.Shipped", entries[0].ContextMap()["event"])
}

// TestEmitFromGoroutinesWithinTheHandler: concurrent emits of a handler
// that waits for its goroutines all join the call.
func TestEmitFromGoroutinesWithinTheHandler(t *testing.T) {
	t.Parallel()
	const n = 200
	var mu sync.Mutex
	seen := map[int]bool{}
	m := newMediator(t, limit(4),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, _ PlaceOrder) error {
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					fxcqrs.Emit(ctx, Shipped{ID: i})
				}()
			}
			wg.Wait()
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(_ context.Context, e Shipped) error {
			mu.Lock()
			seen[e.ID] = true
			mu.Unlock()
			return nil
		})),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	assert.Len(t, seen, n)
	assert.Zero(t, m.Stats().LateEmits)
}

func TestRecordEvents(t *testing.T) {
	t.Parallel()
	h := &placeOrderHandler{}
	ctx, rec := fxcqrs.RecordEvents(context.Background())
	got, err := h.Handle(ctx, PlaceOrder{ID: 4})
	require.NoError(t, err)
	assert.Equal(t, Receipt{ID: 4}, got)
	assert.Equal(t, []any{OrderPlaced{ID: 4}}, rec.Events())
	rec.Reset()
	assert.Empty(t, rec.Events())
}

// Event types for TestEmittedValuesSurvive: more types than a buffer keeps
// typed storage for, one of them too large for a pooled buffer to keep.
type (
	valA     struct{ N int }
	valB     struct{ N int }
	valC     struct{ N int }
	valD     struct{ N int }
	valE     struct{ N int }
	valLarge struct {
		N   int
		Pad [600]int // 4.8 KB: its storage is dropped, not pooled
	}
)

// TestEmittedValuesSurvive: every event reaches its handlers with the
// value it was emitted with, whichever way it was stored, in every mode,
// across calls that reuse the same pooled buffers.
func TestEmittedValuesSurvive(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  fxcqrs.Config
	}{
		{"limit 1", limit(1)},
		{"limit 3", limit(3)},
		{"sequential", sequential()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu   sync.Mutex
				seen = map[string][]int{}
			)
			record := func(kind string, n int) {
				mu.Lock()
				seen[kind] = append(seen[kind], n)
				mu.Unlock()
			}
			m := newMediator(t, tc.cfg,
				fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
					for i := range 3 {
						n := c.ID*10 + i
						fxcqrs.Emit(ctx, valA{N: n})
						fxcqrs.Emit(ctx, valLarge{N: n, Pad: [600]int{599: n}})
						fxcqrs.Emit(ctx, valB{N: n})
						fxcqrs.Emit(ctx, valC{N: n})
						fxcqrs.Emit(ctx, valD{N: n})
					}
					return nil
				})),
				fxcqrs.WithEventHandlers(
					eventFunc[valA](func(ctx context.Context, e valA) error {
						record("A", e.N)
						fxcqrs.Emit(ctx, valE{N: e.N}) // a follow-up
						return nil
					}),
					eventFunc[valB](func(_ context.Context, e valB) error { record("B", e.N); return nil }),
					eventFunc[valC](func(_ context.Context, e valC) error { record("C", e.N); return nil }),
					eventFunc[valD](func(_ context.Context, e valD) error { record("D", e.N); return nil }),
					eventFunc[valE](func(_ context.Context, e valE) error { record("E", e.N); return nil }),
					eventFunc[valLarge](func(_ context.Context, e valLarge) error {
						if e.Pad[599] != e.N {
							record("Large torn", e.N)
						}
						record("Large", e.N)
						return nil
					}),
				),
			)
			var want []int
			for id := 1; id <= 20; id++ {
				require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: id}))
				for i := range 3 {
					want = append(want, id*10+i)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, kind := range []string{"A", "B", "C", "D", "E", "Large"} {
				assert.ElementsMatch(t, want, seen[kind], "%s events", kind)
			}
			assert.Empty(t, seen["Large torn"])
		})
	}
}
