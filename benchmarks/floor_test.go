package benchmarks

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
)

// This file is a baseline of a different kind: the least code that keeps
// the promises fxcqrs makes on every call, hand-written for one request
// type and one event type, with nothing else. It answers "how close is
// fxcqrs to what its semantics cost?", which the direct call cannot: the
// direct call keeps none of them.
//
// The promises, and what each costs at the least:
//   - events are collected per call, and an Emit after the call ended is
//     detected, never lost: a fresh context per call (one allocation; a
//     reused one would let a late Emit land in another call) and one
//     atomic operation to close it against Emits from other goroutines;
//   - Stop waits for calls in flight and refuses new ones: one atomic
//     operation to enter, one to leave;
//   - a panicking handler becomes an error: a deferred recover;
//   - each Emit appends under a lock any goroutine may race for: two
//     atomic operations; the event is copied into a pooled buffer, typed
//     here since the floor knows its one event type;
//   - each event handler invocation has its own context too, for its
//     follow-ups and its late Emits, closed like the call's.
//
// What the floor leaves out, so that it stays a lower bound: the handler
// lookup, the response type check, the depth limit, nested calls, stream
// and observer support, error reports.

// floorCtx is the least a handler's context can hold: the parent, the
// events, a lock-and-closed word, the depth.
type floorCtx struct {
	context.Context
	events *[]Event
	state  atomic.Uint32
	depth  int32
}

const (
	floorLocked uint32 = 1 << iota
	floorClosed
)

// floorInFlight packs a stopping flag with the count of calls in flight.
var floorInFlight atomic.Int64

var floorBufs = sync.Pool{New: func() any { s := make([]Event, 0, 8); return &s }}

var errFloorStopped = errors.New("stopped")

func floorEmit(ctx context.Context, ev Event) {
	f := ctx.(*floorCtx)
	for !f.state.CompareAndSwap(0, floorLocked) {
		if f.state.Load()&floorClosed != 0 {
			panic("late emit")
		}
		runtime.Gosched()
	}
	if f.events == nil {
		f.events = floorBufs.Get().(*[]Event)
	}
	*f.events = append(*f.events, ev)
	f.state.Store(0)
}

// seal closes f and returns its events.
func (f *floorCtx) seal() *[]Event {
	for !f.state.CompareAndSwap(0, floorClosed) {
		runtime.Gosched()
	}
	return f.events
}

func floorRecover(err *error) {
	if r := recover(); r != nil {
		*err = errors.New("panic")
	}
}

func floorCallQuery(ctx context.Context, h fxcqrs.RequestHandler[Query, int], q Query) (res int, err error) {
	defer floorRecover(&err)
	return h.Handle(ctx, q)
}

func floorSend(ctx context.Context, h fxcqrs.RequestHandler[Query, int], q Query) (int, error) {
	if floorInFlight.Add(1) < 0 {
		floorInFlight.Add(-1)
		return 0, errFloorStopped
	}
	f := &floorCtx{Context: ctx}
	res, err := floorCallQuery(f, h, q)
	if evs := f.seal(); evs != nil {
		panic("the floor's query emits nothing")
	}
	floorInFlight.Add(-1)
	return res, err
}

type floorEmitter struct{ n int }

func (h floorEmitter) Handle(ctx context.Context, c Cmd) error {
	for i := range h.n {
		floorEmit(ctx, Event{OrderID: c.ID, Seq: i})
	}
	return nil
}

func floorCallCmd(ctx context.Context, h fxcqrs.CommandHandler[Cmd], c Cmd) (err error) {
	defer floorRecover(&err)
	return h.Handle(ctx, c)
}

func floorCallEvent(ctx context.Context, h fxcqrs.EventHandler[Event], ev Event) (err error) {
	defer floorRecover(&err)
	return h.Handle(ctx, ev)
}

// floorExecSequential is Exec in sequential mode with one handler per
// event and no follow-ups.
func floorExecSequential(ctx context.Context, h fxcqrs.CommandHandler[Cmd], eh fxcqrs.EventHandler[Event], c Cmd) error {
	if floorInFlight.Add(1) < 0 {
		floorInFlight.Add(-1)
		return errFloorStopped
	}
	defer floorInFlight.Add(-1)
	f := &floorCtx{Context: ctx}
	err := floorCallCmd(f, h, c)
	evs := f.seal()
	if evs == nil {
		return err
	}
	defer func() {
		clear(*evs)
		*evs = (*evs)[:0]
		floorBufs.Put(evs)
	}()
	if err != nil {
		return err
	}
	frames := make([]floorCtx, len(*evs))
	var failed error
	for i, ev := range *evs {
		inv := &frames[i]
		inv.Context = ctx
		inv.depth = f.depth + 1
		if err := floorCallEvent(inv, eh, ev); err != nil {
			failed = err
		}
		if inv.seal() != nil {
			panic("the floor's event handlers emit nothing")
		}
	}
	return failed
}

// BenchmarkFloor compares fxcqrs with the floor of its own semantics: see
// the top of this file.
func BenchmarkFloor(b *testing.B) {
	ctx := context.Background()
	b.Run("Send/floor", func(b *testing.B) {
		var h fxcqrs.RequestHandler[Query, int] = QueryHandler{}
		b.ReportAllocs()
		for i := 1000; b.Loop(); i++ {
			if _, err := floorSend(ctx, h, Query{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Send/fxcqrs", func(b *testing.B) {
		m := newMediator(b, fxcqrs.Config{}, fxcqrs.WithRequestHandlers(QueryHandler{}))
		b.ReportAllocs()
		for i := 1000; b.Loop(); i++ {
			if _, err := fxcqrs.Send[int](ctx, m, Query{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Exec sequential 4 events/floor", func(b *testing.B) {
		var (
			h  fxcqrs.CommandHandler[Cmd] = floorEmitter{n: 4}
			eh fxcqrs.EventHandler[Event] = NopEventHandler{}
		)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := floorExecSequential(ctx, h, eh, Cmd{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Exec sequential 4 events/fxcqrs", func(b *testing.B) {
		m := newMediator(b, fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: true}},
			fxcqrs.WithCommandHandlers(EmitHandler{N: 4}), fxcqrs.WithEventHandlers(NopEventHandler{}))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := fxcqrs.Exec(ctx, m, Cmd{ID: i}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
