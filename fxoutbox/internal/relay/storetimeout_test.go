package relay

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// StoreTimeout is the lease by default and never more, so that a step
// of a store's turn does not outlive the lease it renewed; negative
// leaves the steps unbounded.
func TestStoreTimeoutDefaults(t *testing.T) {
	t.Parallel()
	assert.Equal(t, 4*time.Second, WithDefaults(Config{}).StoreTimeout)
	assert.Equal(t, 10*time.Second, WithDefaults(Config{Lease: 10 * time.Second}).StoreTimeout)
	assert.Equal(t, 2*time.Second, WithDefaults(Config{Lease: 2 * time.Second, StoreTimeout: time.Minute}).StoreTimeout)
	assert.Equal(t, time.Second, WithDefaults(Config{StoreTimeout: time.Second}).StoreTimeout)
	assert.Negative(t, WithDefaults(Config{StoreTimeout: -1}).StoreTimeout)
}
