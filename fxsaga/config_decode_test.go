package fxsaga_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The module's and the runner's configurations read durations as a
// person writes them.
func TestConfigDecodes(t *testing.T) {
	t.Parallel()
	var c fxsaga.Config
	require.NoError(t, json.Unmarshal([]byte(`{"recoveryInterval":"1m","runner":{"compensationAttempts":3,"compensationBackoff":"250ms"}}`), &c))
	assert.Equal(t, time.Minute, c.RecoveryInterval)
	assert.Equal(t, 3, c.Runner.CompensationAttempts)
	assert.Equal(t, 250*time.Millisecond, c.Runner.CompensationBackoff)
}
