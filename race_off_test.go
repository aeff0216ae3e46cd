//go:build !race

package fxcqrs_test

const raceEnabled = false
