package fxcqrs

import (
	"context"

	"go.uber.org/zap"
)

// Background mode (EventConfig.Background): a call hands its events to the
// dispatcher and returns. They run on helpers under the same limit; the
// queue is bounded, and a full one makes the caller wait. The batch counts
// as in flight until its last invocation ends, so Stop drains it.

// submit hands a call's events to background processing and returns
// without waiting for them. A full queue makes the caller wait for room,
// or for its context: nothing is dropped. It returns the failures the
// caller must see: events that could not be queued.
func (m *Mediator) submit(f *frame, d *dispatcher, events []eventRecord) []EventFailure {
	for i := range events {
		events[i].detach() // they run after the caller released their buffer
	}
	bg := &batch{ctx: context.WithoutCancel(f.Context), detached: true, stripe: f.stripe}
	invs, fails := m.expand(bg.ctx, bg, f.depth, events)
	if len(fails) > 0 {
		m.reportBackground(bg.ctx, fails)
	}
	if len(invs) == 0 {
		return nil
	}
	// Waiting for room is waiting for a slot too: the observer hears now,
	// before the lock, so that room checked is room used.
	m.queued(invs)
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
			failures := make([]EventFailure, len(invs))
			for i := range invs {
				failures[i] = d.notStarted(&invs[i], f.Err())
			}
			return failures
		}
	}
	m.calls.enter(bg.stripe) // the batch is in flight until its last invocation ends
	d.enqueueLocked(bg, invs)
	if bg.pending == 0 {
		d.mu.Unlock()
		m.reportBackground(bg.ctx, bg.failures)
		m.calls.leave(bg.stripe)
		return nil
	}
	d.spawnLocked()
	d.mu.Unlock()
	return nil
}

func (m *Mediator) reportBackground(ctx context.Context, failures []EventFailure) {
	if len(failures) == 0 {
		return
	}
	err := &EventError{Failures: failures}
	m.log.Error("fxcqrs: background event handlers failed", zap.Error(err))
	if m.onBackgroundError != nil {
		m.onBackgroundError(ctx, err)
	}
}
