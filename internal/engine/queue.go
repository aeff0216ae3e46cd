package engine

import "context"

// The queued mode: every call of a lane shares one FIFO of invocations and
// at most limit of them run at once. Slots are taken in emit order, and a
// waiting invocation is a queue node, not a goroutine. Slots are served by
// whoever is at hand, cheapest first:
//
//   - the caller runs its own invocations while one of them is at the head
//     of the queue and a slot is free, so a call whose events are quick
//     never hands off to another goroutine;
//   - helper goroutines run anything at the head. At most one is being
//     started at any time, and each helper that takes work starts the next
//     if work and slots remain, so helpers grow with the work actually
//     waiting, never beyond the limit; a helper exits when it finds nothing
//     to run, so an idle engine holds no goroutine.
//
// Invocations that find a slot free when they are queued (nothing ahead of
// them) reserve it at once: they never wait, and only the others are
// reported as queued.

// batch is the queued processing of one call (or one stream item): its
// invocations and what failed. Its fields are guarded by the dispatcher's
// mutex.
type batch struct {
	ctx      context.Context // the call's context: parent of invocation frames
	pending  int             // invocations queued or running
	failures []Failure
	first    []invocation   // the invocations, to find the queued ones on cancel
	more     [][]invocation // follow-ups' invocations, likewise
	parked   bool           // the caller waits on wake
	wake     chan struct{}
	detached bool  // background: nobody waits; the last invocation reports
	stripe   uint8 // background: where the batch counts as in flight
}

// invocation is one event × one handler, queued. It carries the frame its
// handler runs with (whose Context is the call's) and its queue links.
type invocation struct {
	Frame
	b          *batch
	rec        Record
	h          *Handler
	prev, next *invocation
	queued     bool // linked in the queue
	reserved   bool // holds the slot it found free when queued
	started    bool
	queuedAt   Mono // set only with a reporter, for those that wait
	err        error
}

// runQueued runs a call's events through the queue and returns when all
// of them, and their follow-ups, have run or been reported.
func (e *Engine) runQueued(f *Frame, d *dispatcher, events []Record) []Failure {
	n := e.count(events)
	if n == 0 {
		return nil // nothing handles them (an outbox's routed events): no batch
	}
	b := &batch{ctx: f.Context}
	invs, fails := e.expandCounted(b, f.depth, events, n)
	b.failures = fails
	if len(invs) > 0 {
		d.process(b, invs)
	}
	return b.failures
}

// expand turns events emitted at depth into invocations of batch b, in
// emit order, then handler order. Events past MaxDepth become failures.
func (e *Engine) expand(b *batch, depth int16, events []Record) ([]invocation, []Failure) {
	return e.expandCounted(b, depth, events, e.count(events))
}

// expandCounted is expand for events that make n invocations.
func (e *Engine) expandCounted(b *batch, depth int16, events []Record, n int) ([]invocation, []Failure) {
	if n == 0 {
		return nil, nil
	}
	if depth+1 > MaxDepth {
		return nil, e.tooDeep(b.ctx, events, nil)
	}
	invs := make([]invocation, n)
	k := 0
	var lookup handlerCache
	for i := range events {
		ev := &events[i]
		for _, h := range lookup.of(e, ev) {
			inv := &invs[k]
			inv.initInvocation(b.ctx, e, depth+1)
			inv.b = b
			inv.rec = *ev
			inv.h = h
			k++
		}
	}
	return invs, nil
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
			e.unhandled(ev)
		}
		n += len(hs)
	}
	return n
}

// process runs a call's invocations and returns when all of them, and
// their follow-ups, finished or were reported.
func (d *dispatcher) process(b *batch, invs []invocation) {
	done := b.ctx.Done()
	d.mu.Lock()
	d.enqueueLocked(b, invs)
	for b.pending > 0 {
		if inv := d.head; inv != nil && inv.b == b && d.canPopLocked() {
			d.popLocked()
			d.spawnLocked()
			d.mu.Unlock()
			d.runOne(inv)
			continue
		}
		d.spawnLocked()
		if b.wake == nil {
			b.wake = make(chan struct{}, 1)
		}
		b.parked = true
		d.mu.Unlock()
		select {
		case <-b.wake:
			d.mu.Lock()
			b.parked = false
		case <-done:
			// The batch may have completed at the same moment, its wake
			// token already sent: select picks either ready case.
			d.mu.Lock()
			b.parked = false
			done = nil // from now on, wait for the running ones only
			if b.pending > 0 {
				d.dropQueuedLocked(b, b.ctx.Err())
			}
		}
	}
	// This caller served slots; leaving, it hands the rest of the queue on.
	d.spawnLocked()
	d.mu.Unlock()
}

// runOne runs a popped invocation outside the lock and finishes it under
// the lock, which it holds again on return.
func (d *dispatcher) runOne(inv *invocation) {
	var follow *Buffer
	follow, inv.started, inv.err = d.e.invoke(&inv.Frame, &inv.rec, inv.h, inv.queuedAt, true, false)
	var (
		invs  []invocation
		fails []Failure
	)
	var forwarded []Failure
	if follow != nil && d.e.cfg.Forward != nil {
		forwarded = d.e.forward(&inv.Frame, inv.h, follow, nil)
	}
	if follow != nil {
		// The follow-ups wait in the queue past this buffer's release.
		for i := range follow.recs {
			follow.recs[i].detach()
		}
		invs, fails = d.e.expand(inv.b, inv.depth, follow.recs)
		follow.Release()
	}
	d.mu.Lock()
	d.running--
	b := inv.b
	if inv.err != nil {
		b.failures = append(b.failures, failure(inv.rec, inv.h, inv.err, inv.started))
	}
	b.failures = append(b.failures, fails...)
	b.failures = append(b.failures, forwarded...)
	if len(invs) > 0 {
		d.enqueueLocked(b, invs)
	}
	b.pending--
	if b.pending == 0 {
		d.batchDoneLocked(b)
	}
}

// helper runs queued invocations until none can start, then exits.
func (d *dispatcher) helper() {
	defer d.helpers.Done()
	d.mu.Lock()
	d.starting = false
	for d.head != nil && d.canPopLocked() {
		inv := d.popLocked()
		d.spawnLocked()
		d.mu.Unlock()
		d.runOne(inv)
	}
	d.mu.Unlock()
}

// canPopLocked reports whether the head of the queue can start now.
func (d *dispatcher) canPopLocked() bool {
	return d.head.reserved || d.running < d.limit
}

// spawnLocked starts a helper when work can start and no helper is
// already on its way.
func (d *dispatcher) spawnLocked() {
	if d.starting || d.head == nil || !d.canPopLocked() {
		return
	}
	d.starting = true
	d.helpers.Add(1)
	go d.helper()
}
