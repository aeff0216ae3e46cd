package fxbus_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A RetryPolicy reads durations as a person writes them, and
// nanoseconds as encoding/json writes them.
func TestRetryPolicyDecodes(t *testing.T) {
	t.Parallel()
	var p fxbus.RetryPolicy
	require.NoError(t, json.Unmarshal([]byte(`{"maxRetries":2,"initialInterval":"250ms","maxInterval":3000000000}`), &p))
	assert.Equal(t, fxbus.RetryPolicy{MaxRetries: 2, InitialInterval: 250 * time.Millisecond, MaxInterval: 3 * time.Second}, p)
	require.Error(t, json.Unmarshal([]byte(`{"initialInterval":"soon"}`), &p))
}
