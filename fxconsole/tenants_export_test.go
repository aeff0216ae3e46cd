package fxconsole

import (
	"testing"
	"time"
)

// SetStoreTimeout has a page wait d for a tenant store, until t ends.
// Not for parallel tests.
func SetStoreTimeout(t testing.TB, d time.Duration) {
	old := storeTimeout
	storeTimeout = d
	t.Cleanup(func() { storeTimeout = old })
}
