package engine

import "context"

// The background mode: a call hands its events to the queue and returns.
// They run on helpers under the same limit; the queue is bounded, and a
// full one makes the caller wait. The batch counts as in flight until its
// last invocation ends, so Stop drains it.

// submit hands a call's events to background processing and returns
// without waiting for them. A full queue makes the caller wait for room,
// or for its context: nothing is dropped. It returns the failures the
// caller must see: events that could not be queued.
func (e *Engine) submit(f *Frame, d *dispatcher, events []Record) []Failure {
	for i := range events {
		events[i].detach() // they run after the caller released their buffer
	}
	bg := &batch{ctx: context.WithoutCancel(f.Context), detached: true, stripe: f.stripe}
	invs, fails := e.expand(bg, f.depth, events)
	if len(fails) > 0 {
		e.reportBackground(bg.ctx, fails)
	}
	if len(invs) == 0 {
		return nil
	}
	done := f.Done()
	d.mu.Lock()
	for d.detached > 0 && d.detached+len(invs) > d.queueCap && d.aborted == nil {
		if d.room == nil {
			d.room = make(chan struct{})
		}
		room := d.room
		d.mu.Unlock()
		select {
		case <-room:
			d.mu.Lock()
		case <-done:
			// The response is valid; its events could not be queued.
			failures := make([]Failure, len(invs))
			for i := range invs {
				inv := &invs[i]
				inv.err = &NotStarted{Cause: f.Err()}
				e.dropped(inv.Context, inv.rec, inv.h, inv.err, 0)
				failures[i] = failure(inv.rec, inv.h, inv.err, false)
			}
			return failures
		}
	}
	e.calls.enter(bg.stripe) // the batch is in flight until its last invocation ends
	d.enqueueLocked(bg, invs)
	if bg.pending == 0 {
		d.mu.Unlock()
		e.reportBackground(bg.ctx, bg.failures)
		e.calls.leave(bg.stripe)
		return nil
	}
	d.spawnLocked()
	d.mu.Unlock()
	return nil
}

// foregroundKey marks a context whose calls wait for their events even in
// background mode.
type foregroundKey struct{}

// WithForeground returns ctx marked so.
func WithForeground(ctx context.Context) context.Context {
	return context.WithValue(ctx, foregroundKey{}, true)
}

// InForeground reports whether ctx is marked so.
func InForeground(ctx context.Context) bool {
	v, _ := ctx.Value(foregroundKey{}).(bool)
	return v
}

func (e *Engine) reportBackground(ctx context.Context, failures []Failure) {
	if len(failures) > 0 {
		e.cfg.Background(ctx, failures)
	}
}
