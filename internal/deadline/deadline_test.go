package deadline

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShare(t *testing.T) {
	t.Parallel()
	parent, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	ctx, cancelShare := Share(parent, 0.25)
	defer cancelShare()
	d, ok := ctx.Deadline()
	require.True(t, ok)
	assert.InDelta(t, float64(15*time.Minute), float64(time.Until(d)), float64(time.Minute))

	free, cancelFree := Share(context.Background(), 0.5)
	defer cancelFree()
	_, ok = free.Deadline()
	assert.False(t, ok, "no deadline, none made")
}
