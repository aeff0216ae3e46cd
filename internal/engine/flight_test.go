package engine

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newFlight(t *testing.T, flags int64) *flight {
	t.Helper()
	fl := new(flight)
	fl.init(flags)
	require.GreaterOrEqual(t, len(fl.stripes), 2, "these tests need two stripes at least")
	return fl
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Stop waits for the calls of every stripe, not only the last one to
// leave: a stripe that empties checks the others.
func TestFlightDrainsEveryStripe(t *testing.T) {
	fl := newFlight(t, 0)
	last := uint8(len(fl.stripes) - 1)
	assert.Zero(t, fl.enter(0))
	assert.Zero(t, fl.enter(last))
	assert.Zero(t, fl.enter(last))
	assert.EqualValues(t, 3, fl.count())

	drained := fl.stop()
	assert.NotZero(t, fl.enter(1)&flightStopping, "a call after stop meets the flag")
	fl.leave(1)
	assert.False(t, isClosed(drained), "three calls are still in flight")

	fl.leave(last)
	fl.leave(0)
	assert.False(t, isClosed(drained), "one call is still in flight in the last stripe")

	fl.leave(last)
	assert.True(t, isClosed(drained))
	assert.Zero(t, fl.count())
}

func TestFlightStopWithNothingInFlight(t *testing.T) {
	fl := newFlight(t, 0)
	assert.True(t, isClosed(fl.stop()))
}

// A call refused while the mediator is not ready still counts for the
// instant it takes to leave; a Stop in that instant must not wait forever
// (the flag left in the word must not hide that the count reached zero).
func TestFlightStopWhileNotReady(t *testing.T) {
	fl := newFlight(t, flightNotReady)
	assert.NotZero(t, fl.enter(0)&flightNotReady)
	drained := fl.stop()
	assert.False(t, isClosed(drained))
	fl.leave(0)
	assert.True(t, isClosed(drained))
}

func TestFlightFlags(t *testing.T) {
	fl := newFlight(t, flightNotReady)
	for s := range fl.stripes {
		assert.Equal(t, flightNotReady, fl.enter(uint8(s)), "stripe %d", s)
		fl.leave(uint8(s))
	}
	fl.clear(flightNotReady)
	for s := range fl.stripes {
		assert.Zero(t, fl.enter(uint8(s)), "stripe %d", s)
		fl.leave(uint8(s))
	}
}

// The promise Stop rests on, under contention: once drained is closed, no
// admitted call is still inside, whichever stripes the calls used and
// however their leaves interleave with stop.
func TestFlightDrainedMeansEmpty(t *testing.T) {
	for round := range 20 {
		fl := newFlight(t, 0)
		var (
			inside   atomic.Int64 // admitted calls between enter and leave
			admitted atomic.Int64
			wg       sync.WaitGroup
			start    = make(chan struct{})
		)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; ; i++ {
					s := uint8((g*7 + i) % len(fl.stripes))
					if fl.enter(s) != 0 {
						fl.leave(s)
						return
					}
					inside.Add(1)
					admitted.Add(1)
					inside.Add(-1)
					fl.leave(s)
				}
			}()
		}
		close(start)
		for admitted.Load() < 100 {
			// Let calls get going before stopping.
			runtime.Gosched()
		}
		drained := fl.stop()
		select {
		case <-drained:
		case <-time.After(time.Minute):
			t.Fatalf("round %d: Stop never drained; %d calls counted", round, fl.count())
		}
		assert.Zero(t, inside.Load(), "round %d: a call was inside after drained closed", round)
		wg.Wait()
		assert.Zero(t, fl.count())
	}
}
