package engine

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// flight counts the calls in flight, for Stop to wait for, and holds the
// flags that refuse new ones. Every call enters and leaves it, so it is
// striped: one counter on one cache line, hit by every call on every core,
// made Send slower on two cores than on one (the line bounced between
// them). Each call counts in one stripe, chosen from its frame's address:
// the runtime allocates each P's frames from spans of its own, so calls on
// different cores mostly count in different stripes, and a core keeps
// finding its stripe in its cache.
//
// Every stripe word holds the flags beside its count, so that admission
// stays one atomic add, which returns both.
type flight struct {
	stripes []stripe
	shift   uint // 64 - log2(len(stripes)): picks the top bits of a hash

	drained     chan struct{} // closed once stopping with nothing in flight
	drainedOnce sync.Once
}

// stripe is one counter alone on its cache lines (two, for CPUs that
// fetch lines in adjacent pairs).
type stripe struct {
	v atomic.Int64
	_ [120]byte
}

const (
	flightStopping int64 = 1 << 62
	flightNotReady int64 = 1 << 61
	flightCalls    int64 = flightNotReady - 1
)

// maxStripes keeps a stripe's index in a byte of the frame.
const maxStripes = 256

func (fl *flight) init(flags int64) {
	n := 1
	for n < 4*runtime.GOMAXPROCS(0) && n < maxStripes {
		n *= 2
	}
	fl.stripes = make([]stripe, n)
	for i := range fl.stripes {
		fl.stripes[i].v.Store(flags)
	}
	fl.shift = 64
	for s := n; s > 1; s /= 2 {
		fl.shift--
	}
	fl.drained = make(chan struct{})
}

// stripeOf picks the stripe of the call whose frame is f. Only the address
// is used, as a number.
func (fl *flight) stripeOf(f *Frame) uint8 {
	page := uint64(uintptr(unsafe.Pointer(f))) >> 13 // a span of 32-byte frames is one 8 KiB page
	return uint8((page * 0x9E3779B97F4A7C15) >> fl.shift)
}

// enter counts a call in stripe s and returns the flags it met.
func (fl *flight) enter(s uint8) (flags int64) {
	return fl.stripes[s].v.Add(1) &^ flightCalls
}

// leave is the other half of enter.
func (fl *flight) leave(s uint8) {
	if fl.stripes[s].v.Add(-1)&(flightStopping|flightCalls) == flightStopping {
		fl.checkDrained()
	}
}

// checkDrained closes drained when nothing is in flight; it is called
// once stopping. A stripe that reaches zero while stopping checks the
// others; of two stripes reaching zero at once, one sees the other's
// (atomics are sequentially consistent), so the last one closes it.
func (fl *flight) checkDrained() {
	for i := range fl.stripes {
		if fl.stripes[i].v.Load()&flightCalls != 0 {
			return
		}
	}
	fl.drainedOnce.Do(func() { close(fl.drained) })
}

// set raises flag in every stripe; clear lowers it.
func (fl *flight) set(flag int64) {
	for i := range fl.stripes {
		fl.stripes[i].v.Or(flag)
	}
}

func (fl *flight) clear(flag int64) {
	for i := range fl.stripes {
		fl.stripes[i].v.And(^flag)
	}
}

// stop refuses new calls from now on and returns a channel closed once
// none is in flight.
func (fl *flight) stop() <-chan struct{} {
	fl.set(flightStopping)
	fl.checkDrained()
	return fl.drained
}

// count returns the number of calls in flight.
func (fl *flight) count() int64 {
	var n int64
	for i := range fl.stripes {
		n += fl.stripes[i].v.Load() & flightCalls
	}
	return n
}
