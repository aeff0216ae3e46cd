//go:build !race

package fxoutbox_test

const raceEnabled = false
