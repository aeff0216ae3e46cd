package engine

import (
	"context"

	"github.com/fxcqrs/fxcqrs/internal/typekey"
	"go.uber.org/zap"
)

// Inline processing: sequential mode, and every call made from inside an
// event handler (which holds a slot already, and so never waits for one:
// no limit can deadlock a nested call). Invocations run one after another
// on the caller's goroutine: emit order, then handler order, follow-ups
// breadth first. They need no queue node, only a frame each.

// runInline runs events and their follow-ups inline, under the call's
// context ctx, at the call's depth.
func (e *Engine) runInline(ctx context.Context, depth int16, events []Record) []Failure {
	var (
		failures []Failure
		next     []Record
		// The follow-ups of one level stay in their buffers until the next
		// level has run: their records point there.
		bufs    [2][4]*Buffer
		held    = bufs[0][:0] // the buffers events point into
		holding = bufs[1][:0] // the buffers next points into
	)
	cancellable := ctx.Done() != nil
	for len(events) > 0 {
		n := e.count(events)
		if n == 0 {
			break
		}
		if depth+1 > MaxDepth {
			failures = e.tooDeep(ctx, events, failures)
			break
		}
		frames := make([]Frame, n)
		next = next[:0:0] // events may alias the previous level's next
		k := 0
		var lookup handlerCache
		for i := range events {
			ev := &events[i]
			for _, h := range lookup.of(e, ev) {
				f := &frames[k]
				k++
				f.initInvocation(ctx, e, depth+1)
				follow, started, err := e.invoke(f, ev, h, 0, cancellable)
				if err != nil {
					failures = append(failures, failure(*ev, h, err, started))
					continue
				}
				if follow != nil && e.cfg.Forward != nil {
					failures = e.forward(f, h, follow, failures)
				}
				if follow != nil {
					next = append(next, follow.recs...)
					holding = append(holding, follow)
				}
			}
		}
		releaseAll(held)
		held, holding = holding, held[:0]
		events = next
		depth++
	}
	releaseAll(held)
	return failures
}

// count returns how many invocations events make. Events nobody handles
// are logged at debug level.
func (e *Engine) count(events []Record) int {
	var (
		n      int
		lookup handlerCache
	)
	for i := range events {
		ev := &events[i]
		hs := lookup.of(e, ev)
		if len(hs) == 0 {
			if ce := e.cfg.Log.Check(zap.DebugLevel, "event has no handlers"); ce != nil {
				ce.Write(zap.String("event", typeName(ev.Type())))
			}
		}
		n += len(hs)
	}
	return n
}

// handlerCache remembers the last event type looked up: a handler emits
// runs of one type more often than not.
type handlerCache struct {
	key typekey.Key
	hs  []*Handler
}

func (c *handlerCache) of(e *Engine, ev *Record) []*Handler {
	if k := ev.Key(); k != c.key {
		c.key = k
		c.hs = e.handlers(ev)
	}
	return c.hs
}
