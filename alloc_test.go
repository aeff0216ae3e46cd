package fxcqrs_test

import (
	"context"
	"iter"
	"reflect"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
)

type (
	unhandledCmd   struct{ ID int }
	unhandledEvent struct{ OrderID, Qty int }
)

// unhandledEmitter emits an event no in-process handler handles.
type unhandledEmitter struct{}

func (unhandledEmitter) Handle(ctx context.Context, c unhandledCmd) error {
	fxcqrs.Emit(ctx, unhandledEvent{OrderID: c.ID})
	return nil
}

// outboxLike is middleware that takes what its handler emitted out of the
// process itself, as the outbox's unit of work does.
type outboxLike struct{}

func (outboxLike) Handle(ctx context.Context, _ fxcqrs.Call, next fxcqrs.Next) (any, error) {
	out, err := next(ctx)
	if err == nil && len(fxcqrs.Emitted(ctx)) > 0 {
		fxcqrs.MarkForwarded(ctx)
	}
	return out, err
}

// TestAllocationsPerCall pins the heap allocations of the common calls, a
// count that does not depend on the machine: a change that adds one fails
// here, not in a benchmark nobody reads. Under -race it is skipped; `make
// test` runs it without.
//
// What each allocation is: the call's frame (every call but Publish,
// whose frame stays on the stack); the frames of one level of event
// invocations (one slice); the batch of concurrent processing; Publish's
// copy of its event and the frame of its one invocation. Under
// middleware: the handler's call as the chain's Next, its message boxed
// in the Call, and what Emitted returns (a slice, the event boxed); events
// no in-process handler handles take no batch.
func TestAllocationsPerCall(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		max  float64
		call func(m *fxcqrs.Mediator) error
		cfg  fxcqrs.Config
	}{
		{"Send, no events", 1, func(m *fxcqrs.Mediator) error {
			_, err := fxcqrs.Send[int](ctx, m, benchQuery{ID: 1000})
			return err
		}, fxcqrs.Config{}},
		{"Exec, 4 events, sequential", 2, func(m *fxcqrs.Mediator) error {
			return fxcqrs.Exec(ctx, m, benchCmd{ID: 1000})
		}, sequential()},
		{"Exec, 4 events, limit 3", 3, func(m *fxcqrs.Mediator) error {
			return fxcqrs.Exec(ctx, m, benchCmd{ID: 1000})
		}, limit(3)},
		{"Publish, 1 handler", 2, func(m *fxcqrs.Mediator) error {
			return fxcqrs.Publish(ctx, m, benchEvent{OrderID: 1000})
		}, fxcqrs.Config{}},
		{"Exec under middleware that takes its 1 event out", 5, func(m *fxcqrs.Mediator) error {
			return fxcqrs.Exec(ctx, m, unhandledCmd{ID: 1000})
		}, fxcqrs.Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMediator(t, tc.cfg,
				fxcqrs.WithRequestHandlers(benchQueryHandler{}),
				fxcqrs.WithCommandHandlers(benchEmitter{n: 4}, unhandledEmitter{}),
				fxcqrs.WithEventHandlers(benchEventHandler{}),
				fxcqrs.WithMiddleware(fxcqrs.ForMessages(outboxLike{}, reflect.TypeFor[unhandledCmd]())),
			)
			var err error
			got := testing.AllocsPerRun(1000, func() {
				if e := tc.call(m); e != nil {
					err = e
				}
			})
			assert.NoError(t, err)
			assert.LessOrEqual(t, got, tc.max, "allocations per call")
		})
	}
}

type benchTicks struct{ N int }

// benchTicker yields N items, emitting a benchEvent before each.
type benchTicker struct{}

func (benchTicker) Handle(ctx context.Context, t benchTicks) iter.Seq2[int, error] {
	return func(yield func(int, error) bool) {
		for i := range t.N {
			fxcqrs.Emit(ctx, benchEvent{OrderID: i})
			if !yield(i, nil) {
				return
			}
		}
	}
}

// TestAllocationsPerStreamItem pins what each item of a stream costs: the
// frame its event's invocation runs with. (What a stream costs once, its
// iterators' closures included, does not grow with it.)
func TestAllocationsPerStreamItem(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithStreamHandlers(benchTicker{}),
		fxcqrs.WithEventHandlers(benchEventHandler{}),
	)
	var err error
	stream := func(n int) float64 {
		return testing.AllocsPerRun(200, func() {
			for _, e := range fxcqrs.Stream[int](context.Background(), m, benchTicks{N: n}) {
				if e != nil {
					err = e
				}
			}
		})
	}
	perItem := (stream(30) - stream(10)) / 20
	assert.NoError(t, err)
	assert.LessOrEqual(t, perItem, 1.0, "allocations per stream item")
}
