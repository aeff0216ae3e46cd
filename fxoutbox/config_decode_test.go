package fxoutbox_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Config reads its dialect by name and the relay's durations as a
// person writes them.
func TestConfigDecodes(t *testing.T) {
	t.Parallel()
	var c fxoutbox.Config
	require.NoError(t, json.Unmarshal([]byte(`{"dialect":"mariadb","inbox":true,"relay":{"pollInterval":"2s","lease":"10s","batchSize":50}}`), &c))
	assert.Equal(t, fxoutbox.MySQL, c.Dialect)
	assert.True(t, c.Inbox)
	assert.Equal(t, 2*time.Second, c.Relay.PollInterval)
	assert.Equal(t, 10*time.Second, c.Relay.Lease)
	assert.Equal(t, 50, c.Relay.BatchSize)
	require.ErrorContains(t, json.Unmarshal([]byte(`{"dialect":"oracle"}`), &c), `unknown dialect "oracle"`)

	out, err := json.Marshal(fxoutbox.Config{Dialect: fxoutbox.PostgreSQL})
	require.NoError(t, err)
	var back fxoutbox.Config
	require.NoError(t, json.Unmarshal(out, &back))
	assert.Equal(t, fxoutbox.PostgreSQL, back.Dialect, "a config written out reads back")
}
