package engine

import (
	"context"
	"sync"
)

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
	b := &batch{ctx: f.Context}
	invs, fails := e.expand(b, f.depth, events)
	b.failures = fails
	if len(invs) > 0 {
		d.process(b, invs)
	}
	return b.failures
}

// expand turns events emitted at depth into invocations of batch b, in
// emit order, then handler order. Events past MaxDepth become failures.
func (e *Engine) expand(b *batch, depth int16, events []Record) ([]invocation, []Failure) {
	n := e.count(events)
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

// dispatcher shares limit slots among the invocations of every call of one
// lane.
type dispatcher struct {
	e     *Engine
	limit int

	mu       sync.Mutex
	running  int  // invocations holding a slot, reserved ones included
	starting bool // a helper was started and has not taken work yet
	head     *invocation
	tail     *invocation
	waiting  int // queued invocations without a slot
	helpers  sync.WaitGroup
	aborted  error // set by Abort: queued work is reported, not run

	// Background mode: detached invocations in the queue, and their bound.
	queueCap int
	detached int
	room     chan struct{} // closed when detached work leaves the queue
}

func (d *dispatcher) init(e *Engine, limit, queueCap int) {
	d.e, d.limit, d.queueCap = e, limit, queueCap
}

func (d *dispatcher) stats() LaneStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return LaneStats{Limit: d.limit, Running: d.running, Waiting: d.waiting}
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
	follow, inv.started, inv.err = d.e.invoke(&inv.Frame, &inv.rec, inv.h, inv.queuedAt)
	var (
		invs  []invocation
		fails []Failure
	)
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

// enqueueLocked queues b's invocations. Those that find a slot free (no
// invocation waits ahead of them) reserve it and go to the front; only the
// others wait, and only they are reported as queued. To report, it lets go
// of the lock and takes it again, before any of them can start.
func (d *dispatcher) enqueueLocked(b *batch, invs []invocation) {
	if d.refuseLocked(b, invs, 0) {
		return
	}
	free := 0
	if d.waiting == 0 {
		free = min(len(invs), max(d.limit-d.running, 0))
	}
	d.running += free
	for i := range invs[:free] {
		invs[i].reserved = true
	}
	if rep := d.e.cfg.Reporter; rep != nil && free < len(invs) {
		d.mu.Unlock()
		now := Now()
		for i := free; i < len(invs); i++ {
			inv := &invs[i]
			inv.queuedAt = now
			rep.Queued(inv.Context, inv.rec, inv.h)
		}
		d.mu.Lock()
		if d.refuseLocked(b, invs, free) {
			return
		}
	}
	if b.first == nil {
		b.first = invs
	} else {
		b.more = append(b.more, invs)
	}
	b.pending += len(invs)
	// Reserved ones go before every unreserved one: they hold a slot.
	at := d.head
	for at != nil && at.reserved {
		at = at.next
	}
	for i := range invs {
		inv := &invs[i]
		if inv.reserved {
			d.linkBeforeLocked(inv, at)
		} else {
			d.linkBeforeLocked(inv, nil)
			d.waiting++
		}
		if b.detached {
			d.detached++
		}
	}
}

// refuseLocked reports every invocation of invs as not started, and gives
// back the slots reserved, when Abort has run or b's context is done.
func (d *dispatcher) refuseLocked(b *batch, invs []invocation, reserved int) bool {
	cause := d.aborted
	if cause == nil {
		cause = b.ctx.Err()
	}
	if cause == nil {
		return false
	}
	d.running -= reserved
	for i := range invs {
		inv := &invs[i]
		inv.err = &NotStarted{Cause: cause}
		d.e.dropped(inv.Context, inv.rec, inv.h, inv.err, inv.queuedAt)
		b.failures = append(b.failures, failure(inv.rec, inv.h, inv.err, false))
	}
	return true
}

// linkBeforeLocked links inv into the queue before at (nil: at the tail).
func (d *dispatcher) linkBeforeLocked(inv, at *invocation) {
	inv.queued = true
	inv.next = at
	if at == nil {
		inv.prev = d.tail
		d.tail = inv
	} else {
		inv.prev = at.prev
		at.prev = inv
	}
	if inv.prev == nil {
		d.head = inv
	} else {
		inv.prev.next = inv
	}
}

// popLocked takes the head of the queue, with its slot.
func (d *dispatcher) popLocked() *invocation {
	inv := d.head
	d.unlinkLocked(inv)
	if !inv.reserved {
		d.running++
	}
	return inv
}

func (d *dispatcher) unlinkLocked(inv *invocation) {
	if inv.prev == nil {
		d.head = inv.next
	} else {
		inv.prev.next = inv.next
	}
	if inv.next == nil {
		d.tail = inv.prev
	} else {
		inv.next.prev = inv.prev
	}
	inv.prev, inv.next, inv.queued = nil, nil, false
	if !inv.reserved {
		d.waiting--
	}
	if inv.b.detached {
		d.detached--
		if d.room != nil {
			close(d.room)
			d.room = nil
		}
	}
}

// dropQueuedLocked reports every queued invocation of b as not started.
func (d *dispatcher) dropQueuedLocked(b *batch, cause error) {
	drop := func(slab []invocation) {
		for i := range slab {
			inv := &slab[i]
			if !inv.queued {
				continue
			}
			d.unlinkLocked(inv)
			if inv.reserved {
				d.running--
			}
			inv.err = &NotStarted{Cause: cause}
			d.e.dropped(inv.Context, inv.rec, inv.h, inv.err, inv.queuedAt)
			b.failures = append(b.failures, failure(inv.rec, inv.h, inv.err, false))
			b.pending--
		}
	}
	drop(b.first)
	for _, slab := range b.more {
		drop(slab)
	}
	if b.pending == 0 {
		d.batchDoneLocked(b)
	}
}

// batchDoneLocked is called once, when b's last invocation finished.
func (d *dispatcher) batchDoneLocked(b *batch) {
	if b.detached {
		// Report outside the lock, on a goroutine of its own: the
		// logger and the application's handler may block.
		failures := b.failures
		b.failures = nil
		d.helpers.Add(1)
		go func() {
			defer d.helpers.Done()
			d.e.reportBackground(b.ctx, failures)
			d.e.calls.leave(b.stripe)
		}()
		return
	}
	if b.parked {
		select {
		case b.wake <- struct{}{}:
		default: // a token is already there; never block under the lock
		}
	}
}

// abort stops queued work: every invocation still waiting for a slot is
// reported as not started with cause, and so is any enqueued later.
func (d *dispatcher) abort(cause error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.aborted = cause
	var batches []*batch
	for inv := d.head; inv != nil; inv = inv.next {
		if len(batches) == 0 || batches[len(batches)-1] != inv.b {
			batches = append(batches, inv.b)
		}
	}
	for _, b := range batches {
		if b.pending > 0 {
			d.dropQueuedLocked(b, cause)
		}
	}
}
