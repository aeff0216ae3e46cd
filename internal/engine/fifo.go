package engine

// The dispatcher's FIFO: waiting invocations in emit order, linked
// through their queue nodes, and what leaves it (popped, cancelled,
// refused, aborted). Every function here runs under the dispatcher's mutex.

// enqueueLocked queues b's invocations. Under a reporter, those that find
// a slot free (no invocation waits ahead of them) reserve it and go to the
// front; only the others wait, and only they are reported as queued. To report, it lets go
// of the lock and takes it again, before any of them can start.
func (d *dispatcher) enqueueLocked(b *batch, invs []invocation) {
	if d.refuseLocked(b, invs, 0) {
		return
	}
	// Reserving only matters to what the reporter hears: without one,
	// invocations take their slots as they are popped.
	free := 0
	if d.waiting == 0 && d.e.cfg.Reporter != nil {
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
