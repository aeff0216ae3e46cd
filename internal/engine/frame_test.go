package engine

import (
	"testing"
	"unsafe"
)

// Every call allocates a frame, so its size is part of the cost of Send:
// 32 bytes is the smallest size class that holds a context. A field added
// here moves every call to the 48-byte class.
func TestFrameFitsItsSizeClass(t *testing.T) {
	if got := unsafe.Sizeof(Frame{}); got != 32 {
		t.Fatalf("frame is %d bytes, want 32", got)
	}
}
