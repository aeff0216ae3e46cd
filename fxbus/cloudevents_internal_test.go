package fxbus

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A CloudEvents type's ".vN" suffix is the message's version; anything
// else that looks like one is part of the name, at version 1.
func TestCloudEventsTypeVersion(t *testing.T) {
	t.Parallel()
	for typ, want := range map[string][2]string{
		"OrderPlaced":       {"OrderPlaced", "1"},
		"OrderPlaced.v1":    {"OrderPlaced", "1"},
		"OrderPlaced.v2":    {"OrderPlaced", "2"},
		"OrderPlaced.v12":   {"OrderPlaced", "12"},
		"com.x.Placed.v3":   {"com.x.Placed", "3"},
		"OrderPlaced.v0":    {"OrderPlaced.v0", "1"},
		"OrderPlaced.v02":   {"OrderPlaced.v02", "1"},
		"OrderPlaced.vnext": {"OrderPlaced.vnext", "1"},
		".v2":               {".v2", "1"},
	} {
		name, version := nameAndVersion(typ)
		assert.Equal(t, want, [2]string{name, version}, typ)
	}
}
