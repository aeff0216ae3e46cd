package outboxtest

import (
	"time"

	"github.com/fxcqrs/fxcqrs/internal/fakeclock"
)

// Clock is a fake clock for the outbox (Config.Now, Config.After), the
// saga runner (RunnerConfig.Now) and anything else that waits on time: it
// moves only when told, and its timers fire when it moves past them, so
// that a test of a deadline or a schedule waits for no wall-clock time.
// Make one with NewClock. Its methods:
//
//   - Now returns the clock's time;
//   - After returns a channel that receives once the clock has moved d
//     on (at once for d <= 0), as time.After does on the wall clock;
//   - Advance moves the clock d on and fires the timers it passed;
//   - Pending returns how many timers have not fired yet: move the clock
//     once what the test waits for is pending, not before (a move before
//     the timer is asked for fires nothing).
type Clock struct {
	*fakeclock.Clock
}

// NewClock returns a clock at start.
func NewClock(start time.Time) *Clock { return &Clock{fakeclock.New(start)} }
