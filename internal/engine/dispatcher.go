package engine

import "sync"

// The dispatcher of a lane: its slots, its FIFO of waiting invocations
// (fifo.go), and the helpers that serve it (queue.go). Every concurrent
// mode goes through one: queued (queue.go), alone (alone.go) and
// background (background.go).

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

// release gives back a slot taken by tryAcquire and hands the queue on.
func (d *dispatcher) release() {
	d.mu.Lock()
	d.running--
	d.spawnLocked()
	d.mu.Unlock()
}
