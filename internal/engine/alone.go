package engine

// The alone mode: one event with one handler (a Publish, a typical stream
// item), when nothing waits in the queue and a slot is free. The caller
// takes the slot and runs the invocation itself, with no queue node and no
// batch.

// runAlone reports false, having done nothing, when the queue must be
// used instead.
func (e *Engine) runAlone(f *Frame, d *dispatcher, ev Record) ([]Failure, bool) {
	hs := e.handlers(&ev)
	if len(hs) != 1 || f.depth+1 > MaxDepth || !d.tryAcquire() {
		return nil, false
	}
	h := hs[0]
	inv := new(Frame)
	inv.initInvocation(f.Context, e, f.depth+1)
	follow, started, err := e.invoke(inv, &ev, h, 0, true, false)
	d.release()
	if err != nil {
		return []Failure{failure(ev, h, err, started)}, true
	}
	if follow == nil {
		return nil, true
	}
	var fails []Failure
	if e.cfg.Forward != nil {
		fails = e.forward(inv, h, follow, fails)
	}
	// Follow-ups join the call through the queue, like any others.
	fails = append(fails, e.runQueued(inv, d, follow.recs)...)
	follow.Release()
	return fails, true
}
