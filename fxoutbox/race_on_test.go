//go:build race

package fxoutbox_test

// raceEnabled: the race detector allocates and randomly drops sync.Pool
// items, so allocation counts mean nothing under it.
const raceEnabled = true
