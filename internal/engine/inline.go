package engine

import (
	"context"
)

// Inline processing: sequential mode, and every call made from inside an
// event handler (which holds a slot already, and so never waits for one:
// no limit can deadlock a nested call). Invocations run one after another
// on the caller's goroutine: emit order, then handler order, follow-ups
// breadth first. They need no queue node, only a frame each, and no
// deferred recover each: a level recovers its handlers' panics (runFrom).

// runInline runs events and their follow-ups inline, under the call's
// context ctx, at the call's depth.
func (e *Engine) runInline(ctx context.Context, depth int16, events []Record) []Failure {
	r := inlineRun{e: e, ctx: ctx, cancellable: ctx.Done() != nil}
	var held *Buffer // the buffers events point into, linked
	for ; len(events) > 0; depth++ {
		if depth+1 > MaxDepth {
			r.failures = e.tooDeep(ctx, events, r.failures)
			break
		}
		l := level{depth: depth + 1}
		for !r.runFrom(&l, events) {
		}
		// The follow-ups stay in their buffers until they have run: their
		// records point there.
		releaseList(held)
		held, events = l.holding, l.next
	}
	releaseList(held)
	return r.failures
}

// inlineRun is what every invocation of one runInline needs.
type inlineRun struct {
	e           *Engine
	ctx         context.Context // the call's
	cancellable bool            // ctx can end: see invoke
	failures    []Failure
}

// level is where runFrom is in one level of events, kept in memory so that
// it survives a handler's panic, and what the level emitted.
type level struct {
	depth  int16 // of the level's invocations
	i, j   int   // the event, and the index of its handler, to run next
	lookup handlerCache
	frames []Frame // allocated as needed; frames[k:] are not yet used
	k      int
	// running says frames[k-1] is the frame of an invocation under way on
	// the direct path, whose panic runFrom recovers.
	running bool
	next    []Record // the follow-ups, in emit order
	holding *Buffer  // the buffers next points into, linked
}

// runFrom runs l's invocations from where l is, and reports whether it
// reached the end. A handler that panics on the direct path cuts it short:
// its panic is recovered here, once per level rather than once per
// invocation, becomes the invocation's failure, and the caller calls
// runFrom again to go on with the next invocation.
func (r *inlineRun) runFrom(l *level, events []Record) (done bool) {
	defer func() {
		if !l.running {
			return // no handler was running: let a panic of ours go on
		}
		if p := recover(); p != nil {
			r.panicked(l, events, p)
		}
	}()
	for ; l.i < len(events); l.i, l.j = l.i+1, 0 {
		ev := &events[l.i]
		hs := l.lookup.of(r.e, ev)
		if len(hs) == 0 {
			r.e.unhandled(ev)
			continue
		}
		for ; l.j < len(hs); l.j++ {
			h := hs[l.j]
			if l.k == len(l.frames) {
				// Enough for the rest of the level when its events have
				// as many handlers as this one, as they most often do: one
				// allocation per level, no counting pass.
				l.frames, l.k = make([]Frame, (len(events)-l.i)*len(hs)-l.j), 0
			}
			f := &l.frames[l.k]
			l.k++
			f.initInvocation(r.ctx, r.e, l.depth)
			l.running = true
			follow, started, err := r.e.invoke(f, ev, h, 0, r.cancellable, true)
			l.running = false
			switch {
			case err != nil:
				r.failures = append(r.failures, failure(*ev, h, err, started))
			case follow != nil:
				if r.e.cfg.Forward != nil {
					r.failures = r.e.forward(f, h, follow, r.failures)
				}
				l.next = append(l.next, follow.recs...)
				follow.link = l.holding
				l.holding = follow
			}
		}
	}
	return true
}

// panicked makes the recovered panic p of l's running invocation its
// failure, and moves l past it.
func (r *inlineRun) panicked(l *level, events []Record, p any) {
	err := NewPanic(p)
	l.frames[l.k-1].Seal().Release()
	l.running = false
	ev := events[l.i]
	r.failures = append(r.failures, failure(ev, l.lookup.of(r.e, &ev)[l.j], err, true))
	l.j++
}
