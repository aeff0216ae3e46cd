package fakeclock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// A timer fires when the clock moves to or past it, not before; one of
// d <= 0 at once.
func TestTimersFireWhenTheClockPassesThem(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	c := New(start)
	now := c.After(0)
	assert.Equal(t, start, <-now)
	a, b := c.After(time.Second), c.After(2*time.Second)
	assert.Equal(t, 2, c.Pending())
	c.Advance(999 * time.Millisecond)
	assert.Empty(t, a)
	c.Advance(time.Millisecond)
	assert.Equal(t, start.Add(time.Second), <-a)
	assert.Empty(t, b)
	assert.Equal(t, 1, c.Pending())
	c.Advance(time.Hour)
	assert.Equal(t, start.Add(time.Second+time.Hour), <-b)
	assert.Equal(t, start.Add(time.Second+time.Hour), c.Now())
	assert.Zero(t, c.Pending())
}
