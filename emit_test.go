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
	entries := logs.FilterMessage("fxcqrs: event emitted after its handler returned; it is not processed").All()
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
