package relay

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// Only a step that its own deadline ended is a store that hangs: a
// broker's error that holds a deadline of its own (a publish, a confirm
// wait) is not, and does not give up the rest of the store's turn
// (found in review: every deadline in an error counted).
func TestOnlyAStepsOwnDeadlineIsAHang(t *testing.T) {
	t.Parallel()
	brokers := fmt.Errorf("kafkabus: publish: %w", context.DeadlineExceeded)
	live, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	assert.False(t, timedOut(stepped(live, brokers)), "a broker's deadline, the step's still ahead")
	assert.False(t, timedOut(brokers))

	ended, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	err := stepped(ended, fmt.Errorf("select: %w", context.DeadlineExceeded))
	assert.True(t, timedOut(err), "the step's own deadline")
	assert.True(t, timedOut(errors.Join(errors.New("other"), err)), "within a joined error")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the cause still unwraps")
	assert.NoError(t, stepped(ended, nil))

	stopped, stop := context.WithCancel(context.Background())
	stop()
	assert.False(t, timedOut(stepped(stopped, context.Canceled)), "the relay's stop is no hang")
}
