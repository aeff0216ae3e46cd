package fxcqrs_test

import (
	"context"
	"iter"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
)

// TestAllocationsPerCall pins the heap allocations of the common calls, a
// count that does not depend on the machine: a change that adds one fails
// here, not in a benchmark nobody reads. Under -race it is skipped; `make
// test` runs it without.
//
// What each allocation is: the call's frame (every call but Publish,
// whose frame stays on the stack); the frames of one level of event
// invocations (one slice); the batch of concurrent processing; Publish's
// copy of its event and the frame of its one invocation.
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMediator(t, tc.cfg,
				fxcqrs.WithRequestHandlers(benchQueryHandler{}),
				fxcqrs.WithCommandHandlers(benchEmitter{n: 4}),
				fxcqrs.WithEventHandlers(benchEventHandler{}),
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
