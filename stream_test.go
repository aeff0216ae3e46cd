package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

type (
	ListOrders struct{ N int }
	OrderRow   struct{ ID int }
	RowLoaded  struct{ ID int }
	StreamDone struct{}
)

// listHandler yields n rows, emitting RowLoaded before each and StreamDone
// after the last.
type listHandler struct {
	stopped atomic.Bool // the consumer stopped it early
	failAt  int         // yields an error instead of row failAt, if > 0
}

func (h *listHandler) Handle(ctx context.Context, q ListOrders) iter.Seq2[OrderRow, error] {
	return func(yield func(OrderRow, error) bool) {
		for i := 1; i <= q.N; i++ {
			fxcqrs.Emit(ctx, RowLoaded{ID: i})
			if i == h.failAt {
				yield(OrderRow{}, errors.New("row unreadable"))
				return
			}
			if !yield(OrderRow{ID: i}, nil) {
				h.stopped.Store(true)
				return
			}
		}
		fxcqrs.Emit(ctx, StreamDone{})
	}
}

func TestStreamOrdersItemsAfterTheirEvents(t *testing.T) {
	t.Parallel()
	for _, cfg := range []fxcqrs.EventConfig{{}, {MaxConcurrentHandlers: 1}, {Sequential: true}} {
		t.Run(fmt.Sprintf("%+v", cfg), func(t *testing.T) {
			t.Parallel()
			var rec recorder
			m := newMediator(t, fxcqrs.Config{StreamEvents: cfg},
				fxcqrs.WithStreamHandlers(&listHandler{}),
				fxcqrs.WithEventHandlers(
					eventFunc[RowLoaded](func(_ context.Context, e RowLoaded) error { rec.add(fmt.Sprint("event ", e.ID)); return nil }),
					eventFunc[StreamDone](func(context.Context, StreamDone) error { rec.add("done"); return nil }),
				),
			)
			for row, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 3}) {
				require.NoError(t, err)
				rec.add(fmt.Sprint("item ", row.ID))
			}
			assert.Equal(t, []string{"event 1", "item 1", "event 2", "item 2", "event 3", "item 3", "done"}, rec.get(),
				"each item after its events; trailing events before the end")
		})
	}
}

func TestStreamEventFailures(t *testing.T) {
	t.Parallel()
	errRow := errors.New("row event failed")
	errDone := errors.New("done event failed")
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithStreamHandlers(&listHandler{}),
		fxcqrs.WithEventHandlers(
			eventFunc[RowLoaded](func(_ context.Context, e RowLoaded) error {
				if e.ID == 2 {
					return errRow
				}
				return nil
			}),
			eventFunc[StreamDone](func(context.Context, StreamDone) error { return errDone }),
		),
	)
	type elem struct {
		row OrderRow
		err error
	}
	var got []elem
	for row, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 3}) {
		got = append(got, elem{row, err})
	}
	require.Len(t, got, 4)
	assert.NoError(t, got[0].err)
	assert.Equal(t, OrderRow{ID: 2}, got[1].row, "the item whose events failed is not lost")
	assert.ErrorIs(t, got[1].err, errRow)
	var evErr *fxcqrs.EventError
	assert.ErrorAs(t, got[1].err, &evErr)
	assert.Equal(t, OrderRow{ID: 3}, got[2].row, "the stream goes on after an item's events failed")
	assert.NoError(t, got[2].err)
	assert.Zero(t, got[3].row)
	assert.ErrorIs(t, got[3].err, errDone, "trailing failures come as a final element")
}

func TestStreamEarlyBreakStopsHandler(t *testing.T) {
	t.Parallel()
	h := &listHandler{}
	var loaded atomic.Int32
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithStreamHandlers(h),
		fxcqrs.WithEventHandlers(eventFunc[RowLoaded](func(context.Context, RowLoaded) error { loaded.Add(1); return nil })),
	)
	n := 0
	for _, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 100}) {
		require.NoError(t, err)
		n++
		if n == 2 {
			break
		}
	}
	assert.True(t, h.stopped.Load(), "the handler saw its yield return false")
	assert.Equal(t, int32(2), loaded.Load())
	assert.Zero(t, m.Stats().InFlight, "the call ended with the break")
}

func TestStreamHandlerError(t *testing.T) {
	t.Parallel()
	var loaded atomic.Int32
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithStreamHandlers(&listHandler{failAt: 2}),
		fxcqrs.WithEventHandlers(eventFunc[RowLoaded](func(context.Context, RowLoaded) error { loaded.Add(1); return nil })),
	)
	var errs []error
	rows := 0
	for row, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 3}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rows += row.ID
	}
	assert.Equal(t, 1, rows)
	require.Len(t, errs, 1)
	assert.EqualError(t, errs[0], "row unreadable")
	assert.Equal(t, int32(1), loaded.Load(), "events emitted with the error are discarded")
}

type panickyStream struct{}

func (panickyStream) Handle(_ context.Context, q ListOrders) iter.Seq2[OrderRow, error] {
	return func(yield func(OrderRow, error) bool) {
		if !yield(OrderRow{ID: 1}, nil) {
			return
		}
		panic("stream broke")
	}
}

func TestStreamPanics(t *testing.T) {
	t.Parallel()
	m := newMediator(t, fxcqrs.Config{}, fxcqrs.WithStreamHandlers(panickyStream{}))

	var last error
	n := 0
	for _, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{}) {
		n++
		last = err
	}
	assert.Equal(t, 2, n)
	var pe *fxcqrs.PanicError
	require.ErrorAs(t, last, &pe)
	assert.Equal(t, "stream broke", pe.Value)

	// The consumer's own panic is not the handler's: it propagates.
	assert.PanicsWithValue(t, "consumer broke", func() {
		for range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{}) {
			panic("consumer broke")
		}
	})
	assert.Zero(t, m.Stats().InFlight)
}

func TestStreamCancelledContext(t *testing.T) {
	t.Parallel()
	m := newMediator(t, fxcqrs.Config{}, fxcqrs.WithStreamHandlers(&listHandler{}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errs []error
	rows := 0
	for _, err := range fxcqrs.Stream[OrderRow](ctx, m, ListOrders{N: 100}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rows++
		cancel() // after the first item
	}
	assert.Equal(t, 1, rows)
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], context.Canceled)
}

func TestStreamErrors(t *testing.T) {
	t.Parallel()
	m := newMediator(t, fxcqrs.Config{}, fxcqrs.WithStreamHandlers(&listHandler{}))
	collect := func(seq iter.Seq2[OrderRow, error]) (errs []error) {
		for _, err := range seq {
			errs = append(errs, err)
		}
		return errs
	}
	errs := collect(fxcqrs.Stream[OrderRow](context.Background(), m, PlaceOrder{}))
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], fxcqrs.ErrNoHandler)

	errs = collect(fxcqrs.Stream[OrderRow](context.Background(), m, &ListOrders{}))
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], fxcqrs.ErrNoHandler)

	var wrong []error
	for _, err := range fxcqrs.Stream[string](context.Background(), m, ListOrders{N: 1}) {
		wrong = append(wrong, err)
	}
	require.Len(t, wrong, 1)
	assert.Contains(t, wrong[0].Error(), "returns github.com/fxcqrs/fxcqrs_test.OrderRow, not string")
}

func TestStreamEventsLimit(t *testing.T) {
	t.Parallel()
	g := newGauge()
	release := make(chan struct{})
	m := newMediator(t, fxcqrs.Config{}, // StreamEvents default: 10
		fxcqrs.WithStreamHandlers(streamFunc[ListOrders, OrderRow](func(ctx context.Context, q ListOrders) func(func(OrderRow, error) bool) {
			return func(yield func(OrderRow, error) bool) {
				for i := range q.N {
					fxcqrs.Emit(ctx, RowLoaded{ID: i})
				}
				yield(OrderRow{ID: 1}, nil)
			}
		})),
		fxcqrs.WithEventHandlers(blocking[RowLoaded](g, release)),
	)
	done := make(chan []error, 1)
	go func() {
		var errs []error
		for _, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 12}) {
			errs = append(errs, err)
		}
		done <- errs
	}()
	g.waitFor(t, "ten running", func(cur, _, _ int) bool { return cur == fxcqrs.DefaultMaxConcurrentStreamEventHandlers })
	waitUntil(t, "two queued", func() bool { return m.Stats().StreamEvents.Waiting == 2 })
	close(release)
	assert.Equal(t, []error{nil}, <-done)
	_, peak, total := g.snapshot()
	assert.Equal(t, 10, peak)
	assert.Equal(t, 12, total)
}

// TestStopDrainsStreams: a stream being consumed keeps Stop waiting until
// it ends; meanwhile new streams are refused, and the open one keeps
// delivering, its events included.
func TestStopDrainsStreams(t *testing.T) {
	t.Parallel()
	var loaded atomic.Int32
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithStreamHandlers(&listHandler{}),
		fxcqrs.WithEventHandlers(eventFunc[RowLoaded](func(context.Context, RowLoaded) error { loaded.Add(1); return nil })),
	)
	require.NoError(t, err)

	next, stop := iter.Pull2(fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 3}))
	defer stop()
	row, err, ok := next()
	require.True(t, ok)
	require.NoError(t, err)
	assert.Equal(t, OrderRow{ID: 1}, row)

	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop(context.Background()) }()
	waitUntil(t, "new calls refused", func() bool {
		return fxcqrs.Publish(context.Background(), m, Notified{}) != nil
	})
	for _, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 1}) {
		assert.ErrorIs(t, err, fxcqrs.ErrStopped)
	}
	select {
	case <-stopped:
		t.Fatal("Stop returned while a stream was open")
	default:
	}

	for {
		_, err, ok := next()
		if !ok {
			break
		}
		require.NoError(t, err)
	}
	require.NoError(t, <-stopped)
	assert.Equal(t, int32(3), loaded.Load(), "every item's events ran")
}

// Clean-up is an event the handler emits after its consumer stopped.
type Cleanup struct{ AfterRow int }

// An event a stream handler emits after its consumer stopped is processed
// before the consumer's break completes, never dropped: its failure, which
// no consumer can receive, is logged and reaches the observer. A handler
// that failed takes its later events with it.
func TestStreamEventsAfterTheConsumerStopped(t *testing.T) {
	t.Parallel()
	errCleanup := errors.New("cleanup failed")
	for _, tc := range []struct {
		name string
		cfg  fxcqrs.Config
		fail bool
	}{
		{"concurrent", fxcqrs.Config{}, false},
		{"sequential", fxcqrs.Config{StreamEvents: fxcqrs.EventConfig{Sequential: true}}, false},
		{"failing clean-up", fxcqrs.Config{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cleaned atomic.Int32
			core, logs := observer.New(zapcore.ErrorLevel)
			obs := &recordingObserver{}
			m := newMediator(t, tc.cfg,
				fxcqrs.WithLogger(zap.New(core)),
				fxcqrs.WithObserver(obs),
				fxcqrs.WithStreamHandlers(streamFunc[ListOrders, OrderRow](func(ctx context.Context, q ListOrders) func(func(OrderRow, error) bool) {
					return func(yield func(OrderRow, error) bool) {
						for i := 1; i <= q.N; i++ {
							if !yield(OrderRow{ID: i}, nil) {
								fxcqrs.Emit(ctx, Cleanup{AfterRow: i})
								return
							}
						}
					}
				})),
				fxcqrs.WithEventHandlers(eventFunc[Cleanup](func(_ context.Context, c Cleanup) error {
					cleaned.Add(1)
					if tc.fail {
						return errCleanup
					}
					return nil
				})),
			)
			for row, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 10}) {
				require.NoError(t, err)
				if row.ID == 2 {
					break
				}
			}
			assert.Equal(t, int32(1), cleaned.Load(), "the clean-up ran before the break completed")
			assert.Zero(t, m.Stats().InFlight)
			failed := logs.FilterMessageSnippet("after the consumer stopped").All()
			if !tc.fail {
				assert.Empty(t, failed)
				return
			}
			require.Len(t, failed, 1)
			assert.Contains(t, failed[0].ContextMap()["error"], "cleanup failed")
			assert.Contains(t, obs.get(), "finished Cleanup started=true err=true", "the observer sees the failure")
		})
	}
}

// A handler that yields an error and keeps emitting after its consumer
// stopped loses those events with it, as it loses the ones before.
func TestStreamFailedHandlerTakesLaterEvents(t *testing.T) {
	t.Parallel()
	var cleaned atomic.Int32
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithStreamHandlers(streamFunc[ListOrders, OrderRow](func(ctx context.Context, _ ListOrders) func(func(OrderRow, error) bool) {
			return func(yield func(OrderRow, error) bool) {
				if !yield(OrderRow{}, errors.New("broken")) {
					fxcqrs.Emit(ctx, Cleanup{})
				}
			}
		})),
		fxcqrs.WithEventHandlers(eventFunc[Cleanup](func(context.Context, Cleanup) error { cleaned.Add(1); return nil })),
	)
	for _, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{}) {
		require.Error(t, err)
	}
	assert.Zero(t, cleaned.Load())
}
