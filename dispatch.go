package fxcqrs

import (
	"context"
	"sync"

	"go.uber.org/zap"
)

// This file is the event processing engine: python-cqrs's "Parallel Event
// Processing" with its flaws fixed. Everything about when and where an event
// handler runs is here.
//
// One invocation is one event × one handler. In concurrent mode the
// invocations of every call wait in one FIFO queue per dispatcher, and at
// most limit of them run at once: slots are taken in emit order, and a
// waiting invocation is a queue node, not a goroutine. Slots are served by
// whoever is at hand, cheapest first:
//
//   - the caller runs its own invocations while one of them is at the head
//     of the queue and a slot is free, so a call whose events are quick
//     never hands off to another goroutine;
//   - one event with one handler, nothing queued and a slot free (a
//     Publish, a typical stream item) skips the queue altogether;
//   - helper goroutines run anything at the head. At most one is being
//     started at any time, and each helper that takes work starts the next
//     if work and slots remain, so helpers grow with the work actually
//     waiting, never beyond the limit; a helper exits when it finds nothing
//     to run, so an idle mediator holds no goroutine.
//
// A call made from inside an event handler processes its events inline, on
// that handler's goroutine and slot: it never waits for a slot, so no limit
// can deadlock it. Sequential mode runs inline too, breadth first.

// batch is the concurrent event processing of one call (or one stream
// item): its invocations and what failed. Its fields are guarded by the
// dispatcher's mutex. Inline processing needs none.
type batch struct {
	ctx      context.Context // the call's context: parent of invocation frames
	pending  int             // invocations queued or running
	failures []EventFailure
	first    []invocation   // the invocations, to find the queued ones on cancel
	more     [][]invocation // follow-ups' invocations, likewise
	parked   bool           // the caller waits on wake
	wake     chan struct{}
	detached bool  // background: nobody waits; the last invocation reports
	stripe   uint8 // background: where the batch counts as in flight
}

// invocation is one event × one handler. It carries the frame its handler
// runs with (whose Context is the call's), and its queue links.
type invocation struct {
	frame
	b          *batch // nil when run inline
	rec        eventRecord
	h          *eventHandler
	prev, next *invocation
	queued     bool
	started    bool
	queuedAt   monotime // set only for an observer
	err        error
}

func (inv *invocation) failure() EventFailure {
	return failure(inv.rec, inv.h, inv.err, inv.started)
}

func failure(rec eventRecord, h *eventHandler, err error, started bool) EventFailure {
	return EventFailure{Event: rec.event(), EventType: typeName(rec.typ()), Handler: h.name, Err: err, Started: started}
}

// run runs the invocation's handler: see invoke.
func (inv *invocation) run(m *Mediator) *eventBuf {
	var follow *eventBuf
	follow, inv.started, inv.err = invoke(m, &inv.frame, inv.rec, inv.h, inv.queuedAt)
	return follow
}

// initInvocation makes f the frame of an event handler invocation at
// depth, under the call's context ctx. It holds a slot: nested calls made
// with it process their events inline.
func (f *frame) initInvocation(ctx context.Context, m *Mediator, depth int16) {
	f.Context = ctx
	f.buf = &m.bufs.home
	f.depth = depth
	f.slot = true
}

// notStarted marks inv as never started, with cause, tells the observer,
// and returns the failure for its call.
func (d *dispatcher) notStarted(inv *invocation, cause error) EventFailure {
	inv.err = &notStartedError{cause: cause}
	d.m.dropped(inv.Context, inv.rec, inv.h, inv.err, inv.queuedAt)
	return inv.failure()
}

// invoke calls handler h with rec in frame f, unless the call's context is
// already done, and returns the follow-up events it emitted. A failed
// handler's follow-ups are discarded with it. started reports whether the
// handler ran.
func invoke(m *Mediator, f *frame, rec eventRecord, h *eventHandler, queuedAt monotime) (follow *eventBuf, started bool, err error) {
	if cerr := f.Err(); cerr != nil {
		f.seal().release()
		err = &notStartedError{cause: cerr}
		m.dropped(f.Context, rec, h, err, queuedAt)
		return nil, false, err
	}
	if h.chain != nil || m.obs != nil {
		err = m.callEvent(f, rec, h, queuedAt)
	} else {
		err = callHandler(f, rec, h)
	}
	follow = f.seal()
	if err != nil {
		follow.release()
		return nil, true, err
	}
	return follow, true, nil
}

func callHandler(ctx context.Context, rec eventRecord, h *eventHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newPanicError(r)
		}
	}()
	return rec.kind.invoke(ctx, h, rec.value)
}

// handlersOf looks up the handlers of each event, in emit order, and
// counts the invocations they make. Events nobody handles are logged at
// debug level.
func (m *Mediator) handlersOf(events []eventRecord, into [][]*eventHandler) ([][]*eventHandler, int) {
	n := 0
	for _, ev := range events {
		hs, _ := m.reg.eventTable.get(ev.kind.key())
		if len(hs) == 0 {
			if ce := m.log.Check(zap.DebugLevel, "fxcqrs: event has no handlers"); ce != nil {
				ce.Write(zap.String("event", typeName(ev.typ())))
			}
		}
		into = append(into, hs)
		n += len(hs)
	}
	return into, n
}

// tooDeep reports every invocation of events as not started: their chain
// is deeper than MaxDepth.
func (m *Mediator) tooDeep(ctx context.Context, events []eventRecord, handlers [][]*eventHandler) []EventFailure {
	var fails []EventFailure
	for i, ev := range events {
		for _, h := range handlers[i] {
			err := &notStartedError{cause: ErrMaxDepth}
			fails = append(fails, failure(ev, h, err, false))
			m.dropped(ctx, ev, h, err, 0)
		}
	}
	return fails
}

// expand turns events emitted at depth into invocations for the queue, in
// emit order, then handler order, with ctx as their parent context. Events
// past MaxDepth become failures.
func (m *Mediator) expand(ctx context.Context, b *batch, depth int16, events []eventRecord) ([]invocation, []EventFailure) {
	var cache [8][]*eventHandler
	handlers, n := m.handlersOf(events, cache[:0])
	if n == 0 {
		return nil, nil
	}
	if depth+1 > MaxDepth {
		return nil, m.tooDeep(ctx, events, handlers)
	}
	invs := make([]invocation, n)
	k := 0
	for i, ev := range events {
		for _, h := range handlers[i] {
			inv := &invs[k]
			inv.initInvocation(ctx, m, depth+1)
			inv.b = b
			inv.rec = ev
			inv.h = h
			k++
		}
	}
	return invs, nil
}

// process runs the events a call's frame f emitted, per cfg, and returns an
// *EventError if any invocation failed or never ran.
func (m *Mediator) process(f *frame, cfg *EventConfig, d *dispatcher, events []eventRecord) error {
	var failures []EventFailure
	switch {
	case f.slot || cfg.Sequential:
		failures = m.runInline(f.Context, f.depth, events)
	case cfg.Background:
		failures = m.submit(f, d, events)
	default:
		if len(events) == 1 {
			if ok, fails := m.runAlone(f, d, events[0]); ok {
				failures = fails
				break
			}
		}
		b := &batch{ctx: f.Context}
		invs, fails := m.expand(b.ctx, b, f.depth, events)
		b.failures = fails
		if len(invs) > 0 {
			m.queued(invs)
			d.process(b, invs)
		}
		failures = b.failures
	}
	if len(failures) > 0 {
		return &EventError{Failures: failures}
	}
	return nil
}

// runAlone is concurrent mode's fast path for one event with one handler
// (a Publish, a typical stream item): when nothing waits and a slot is
// free, the caller takes the slot and runs the invocation itself, with no
// queue node and no batch. It reports false, having done nothing, when the
// slow path must run.
func (m *Mediator) runAlone(f *frame, d *dispatcher, ev eventRecord) (bool, []EventFailure) {
	hs, _ := m.reg.eventTable.get(ev.kind.key())
	if len(hs) != 1 || f.depth+1 > MaxDepth || !d.tryAcquire() {
		return false, nil
	}
	h := hs[0]
	inv := new(frame)
	inv.initInvocation(f.Context, m, f.depth+1)
	follow, started, err := invoke(m, inv, ev, h, 0)
	d.releaseSlot()
	if err != nil {
		return true, []EventFailure{failure(ev, h, err, started)}
	}
	if follow == nil {
		return true, nil
	}
	// Follow-ups join the call through the queue, like any others.
	defer follow.release()
	b := &batch{ctx: f.Context}
	invs, fails := m.expand(b.ctx, b, inv.depth, follow.recs)
	b.failures = fails
	if len(invs) > 0 {
		m.queued(invs)
		d.process(b, invs)
	}
	return true, b.failures
}

// queued tells the observer that invs wait for slots. It runs before they
// are enqueued, outside the dispatcher's lock.
func (m *Mediator) queued(invs []invocation) {
	if m.obs == nil {
		return
	}
	now := monoNow()
	for i := range invs {
		inv := &invs[i]
		inv.queuedAt = now
		m.obs.InvocationQueued(inv.Context, InvocationQueued{
			Call: Call{Kind: KindEvent, Message: inv.rec.event(), MessageType: inv.h.msgName, Handler: inv.h.name},
		})
	}
}

// runInline runs invocations one after another on this goroutine: emit
// order, then handler order, follow-ups breadth first. It needs no queue
// nodes, only a frame per invocation. The follow-ups of one level stay in
// their buffers until the next level has run: their records point there.
func (m *Mediator) runInline(ctx context.Context, depth int16, events []eventRecord) []EventFailure {
	var (
		failures []EventFailure
		next     []eventRecord
		cache    [8][]*eventHandler
		bufs     [2][4]*eventBuf
		held     = bufs[0][:0] // the buffers events point into
		holding  = bufs[1][:0] // the buffers next points into
	)
	for len(events) > 0 {
		handlers, n := m.handlersOf(events, cache[:0])
		if n == 0 {
			break
		}
		if depth+1 > MaxDepth {
			failures = append(failures, m.tooDeep(ctx, events, handlers)...)
			break
		}
		frames := make([]frame, n)
		next = next[:0:0] // events may alias the previous level's next
		k := 0
		for i, ev := range events {
			for _, h := range handlers[i] {
				f := &frames[k]
				k++
				f.initInvocation(ctx, m, depth+1)
				follow, started, err := invoke(m, f, ev, h, 0)
				if err != nil {
					failures = append(failures, failure(ev, h, err, started))
					continue
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

func releaseAll(bufs []*eventBuf) {
	for i, b := range bufs {
		b.release()
		bufs[i] = nil
	}
}

// dispatcher shares limit slots among the invocations of every call of one
// kind (Config.Events or Config.StreamEvents).
type dispatcher struct {
	m     *Mediator
	limit int

	mu       sync.Mutex
	running  int  // invocations holding a slot
	starting bool // a helper was started and has not taken work yet
	head     *invocation
	tail     *invocation
	waiting  int // queue length
	helpers  sync.WaitGroup
	aborted  error // set by Stop after its deadline: queued work is reported, not run

	// Background mode: detached invocations waiting, and their bound.
	queueCap int
	detached int
	room     chan struct{} // closed when detached work leaves the queue
}

func newDispatcher(m *Mediator, limit, queueCap int) *dispatcher {
	return &dispatcher{m: m, limit: limit, queueCap: queueCap}
}

func (d *dispatcher) stats() DispatchStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return DispatchStats{Limit: d.limit, Running: d.running, Waiting: d.waiting}
}

// tryAcquire takes a slot for the caller if nothing waits for one.
func (d *dispatcher) tryAcquire() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.head != nil || d.running >= d.limit || d.aborted != nil {
		return false
	}
	d.running++
	return true
}

// releaseSlot gives back a slot taken by tryAcquire and hands the queue on.
func (d *dispatcher) releaseSlot() {
	d.mu.Lock()
	d.running--
	d.spawnLocked()
	d.mu.Unlock()
}

// process runs a call's invocations and returns when all of them, and
// their follow-ups, finished or were reported.
func (d *dispatcher) process(b *batch, invs []invocation) {
	done := b.ctx.Done()
	d.mu.Lock()
	d.enqueueLocked(b, invs)
	for b.pending > 0 {
		if inv := d.head; inv != nil && inv.b == b && d.running < d.limit {
			d.popLocked()
			d.running++
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
	follow := inv.run(d.m)
	var (
		invs  []invocation
		fails []EventFailure
	)
	if follow != nil {
		// The follow-ups wait in the queue past this buffer's release.
		for i := range follow.recs {
			follow.recs[i].detach()
		}
		invs, fails = d.m.expand(inv.b.ctx, inv.b, inv.depth, follow.recs)
		follow.release()
		d.m.queued(invs)
	}
	d.mu.Lock()
	d.running--
	b := inv.b
	if inv.err != nil {
		b.failures = append(b.failures, inv.failure())
	}
	b.failures = append(b.failures, fails...)
	if len(invs) > 0 {
		d.enqueueLocked(b, invs)
	}
	b.pending--
	if b.pending == 0 {
		d.completeLocked(b)
	}
}

// helper runs queued invocations until none can start, then exits.
func (d *dispatcher) helper() {
	defer d.helpers.Done()
	d.mu.Lock()
	d.starting = false
	for d.head != nil && d.running < d.limit {
		inv := d.popLocked()
		d.running++
		d.spawnLocked()
		d.mu.Unlock()
		d.runOne(inv)
	}
	d.mu.Unlock()
}

// spawnLocked starts a helper when work waits for a free slot and no
// helper is already on its way.
func (d *dispatcher) spawnLocked() {
	if d.starting || d.head == nil || d.running >= d.limit {
		return
	}
	d.starting = true
	d.helpers.Add(1)
	go d.helper()
}

func (d *dispatcher) enqueueLocked(b *batch, invs []invocation) {
	if d.aborted != nil || b.ctx.Err() != nil {
		cause := d.aborted
		if cause == nil {
			cause = b.ctx.Err()
		}
		for i := range invs {
			b.failures = append(b.failures, d.notStarted(&invs[i], cause))
		}
		return
	}
	if b.first == nil {
		b.first = invs
	} else {
		b.more = append(b.more, invs)
	}
	b.pending += len(invs)
	for i := range invs {
		inv := &invs[i]
		inv.queued = true
		inv.prev = d.tail
		if d.tail == nil {
			d.head = inv
		} else {
			d.tail.next = inv
		}
		d.tail = inv
	}
	d.waiting += len(invs)
	if b.detached {
		d.detached += len(invs)
	}
}

func (d *dispatcher) popLocked() *invocation {
	inv := d.head
	d.unlinkLocked(inv)
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
	d.waiting--
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
			b.failures = append(b.failures, d.notStarted(inv, cause))
			b.pending--
		}
	}
	drop(b.first)
	for _, slab := range b.more {
		drop(slab)
	}
	if b.pending == 0 {
		d.completeLocked(b)
	}
}

// completeLocked is called once, when b's last invocation finished.
func (d *dispatcher) completeLocked(b *batch) {
	if b.detached {
		// Report outside the lock, on a goroutine of its own: the
		// logger and the application's handler may block.
		failures := b.failures
		b.failures = nil
		d.helpers.Add(1)
		go func() {
			defer d.helpers.Done()
			d.m.reportBackground(b.ctx, failures)
			d.m.calls.leave(b.stripe)
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
