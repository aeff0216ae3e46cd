package fxcqrs_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type spanKey struct{}

// recordingObserver records what it sees and puts a "span" in the
// context, as a tracer would.
type recordingObserver struct {
	fxcqrs.NopObserver
	mu    sync.Mutex
	lines []string
}

func short(s string) string { return strings.TrimPrefix(s, "github.com/fxcqrs/fxcqrs_test.") }

func (o *recordingObserver) add(format string, args ...any) {
	o.mu.Lock()
	o.lines = append(o.lines, fmt.Sprintf(format, args...))
	o.mu.Unlock()
}

func (o *recordingObserver) get() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.lines...)
}

func (o *recordingObserver) CallStarted(ctx context.Context, p fxcqrs.CallStarted) context.Context {
	o.add("call started %s %s", p.Call.Kind, short(p.Call.MessageType))
	return context.WithValue(ctx, spanKey{}, "call:"+short(p.Call.MessageType))
}

func (o *recordingObserver) CallFinished(_ context.Context, p fxcqrs.CallFinished) {
	o.add("call finished %s err=%v", short(p.Call.MessageType), p.Err != nil)
}

func (o *recordingObserver) InvocationQueued(ctx context.Context, p fxcqrs.InvocationQueued) {
	o.add("queued %s (parent %v)", short(p.Call.MessageType), ctx.Value(spanKey{}))
}

func (o *recordingObserver) InvocationStarted(ctx context.Context, p fxcqrs.InvocationStarted) context.Context {
	o.add("started %s queued=%v (parent %v)", short(p.Call.MessageType), p.Queued, ctx.Value(spanKey{}))
	return context.WithValue(ctx, spanKey{}, "invocation:"+short(p.Call.MessageType))
}

func (o *recordingObserver) InvocationFinished(_ context.Context, p fxcqrs.InvocationFinished) {
	o.add("finished %s started=%v err=%v", short(p.Call.MessageType), p.Started, p.Err != nil)
}

func TestObserver(t *testing.T) {
	t.Parallel()
	obs := &recordingObserver{}
	var seen []any
	var mu sync.Mutex
	m := newMediator(t, limit(1),
		fxcqrs.WithObserver(obs),
		fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emit(OrderPlaced{}), emit(Shipped{}))),
		fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
				mu.Lock()
				seen = append(seen, ctx.Value(spanKey{}))
				mu.Unlock()
				return nil
			}),
			eventFunc[Shipped](func(context.Context, Shipped) error { return fmt.Errorf("no") }),
		),
	)
	err := fxcqrs.Exec(context.Background(), m, PlaceOrder{})
	require.Error(t, err)
	assert.Equal(t, []string{
		"call started command PlaceOrder",
		// Limit 1: the first invocation takes the free slot at once; only
		// the second waits for it.
		"queued Shipped (parent call:PlaceOrder)",
		"started OrderPlaced queued=false (parent call:PlaceOrder)",
		"finished OrderPlaced started=true err=false",
		"started Shipped queued=true (parent call:PlaceOrder)",
		"finished Shipped started=true err=true",
		"call finished PlaceOrder err=true",
	}, obs.get(), "invocations are children of their call")
	assert.Equal(t, []any{"invocation:OrderPlaced"}, seen, "the handler runs in the invocation's context")
}

func TestObserverSeesPublishStreamsAndDrops(t *testing.T) {
	t.Parallel()
	obs := &recordingObserver{}
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithObserver(obs),
		fxcqrs.WithStreamHandlers(&listHandler{}),
		fxcqrs.WithEventHandlers(eventFunc[Audited](func(context.Context, Audited) error { return nil })),
	)
	require.NoError(t, fxcqrs.Publish(context.Background(), m, Audited{}))
	for _, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{N: 1}) {
		require.NoError(t, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := fxcqrs.Publish(ctx, m, Audited{})
	require.ErrorIs(t, err, fxcqrs.ErrNotStarted)
	assert.Equal(t, []string{
		"call started publish Audited",
		"started Audited queued=false (parent call:Audited)",
		"finished Audited started=true err=false",
		"call finished Audited err=false",
		"call started stream ListOrders",
		"call finished ListOrders err=false",
		"call started publish Audited",
		"finished Audited started=false err=true",
		"call finished Audited err=true",
	}, obs.get())
}

func TestObserverSeesDepthRefusals(t *testing.T) {
	t.Parallel()
	obs := &recordingObserver{}
	m := newMediator(t, sequential(),
		fxcqrs.WithObserver(obs),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
			fxcqrs.Emit(ctx, OrderPlaced{ID: e.ID + 1})
			return nil
		})),
	)
	require.ErrorIs(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{}), fxcqrs.ErrMaxDepth)
	lines := obs.get()
	require.NotEmpty(t, lines)
	assert.Equal(t, "finished OrderPlaced started=false err=true", lines[len(lines)-2], "the refused invocation is reported")
	assert.Equal(t, "call finished OrderPlaced err=true", lines[len(lines)-1])
}

// An invocation that finds a free slot when its call's events are queued
// takes it at once: it is not reported as queued (which would inflate the
// otel wait and waiting metrics). Only the ones beyond the free slots are.
func TestObserverQueuedOnlyWhenWaiting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		limit, events, queued int
	}{
		{limit: 8, events: 2, queued: 0},
		{limit: 2, events: 3, queued: 1},
		{limit: 1, events: 4, queued: 3},
	} {
		t.Run(fmt.Sprintf("limit=%d,events=%d", tc.limit, tc.events), func(t *testing.T) {
			t.Parallel()
			obs := &recordingObserver{}
			emits := make([]func(context.Context), tc.events)
			for i := range emits {
				emits[i] = emit(OrderPlaced{ID: i})
			}
			m := newMediator(t, limit(tc.limit),
				fxcqrs.WithObserver(obs),
				fxcqrs.WithCommandHandlers(emitAll[PlaceOrder](emits...)),
				fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return nil })),
			)
			require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
			var queued, startedQueued, started int
			for _, line := range obs.get() {
				switch {
				case strings.HasPrefix(line, "queued "):
					queued++
				case strings.HasPrefix(line, "started ") && strings.Contains(line, "queued=true"):
					startedQueued++
					started++
				case strings.HasPrefix(line, "started "):
					started++
				}
			}
			assert.Equal(t, tc.events, started)
			assert.Equal(t, tc.queued, queued, "reported queued")
			assert.Equal(t, tc.queued, startedQueued, "started with Queued set")
		})
	}
}
