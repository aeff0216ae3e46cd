package fxbus

import (
	"crypto/rand"
	"sync"
	"time"

	"github.com/google/uuid"
)

// newMessageID returns a new message id: a UUIDv7 as uuid.NewV7 makes it
// (the time in milliseconds, then its sub-millisecond fraction as a 12-bit
// sequence, so that the ids this process makes increase, then 62 random
// bits), drawn from a pool of random bytes instead of a read from the
// system's source per id, which uuid.NewV7 makes into a buffer of its own
// on the heap: a routed event's message cost both.
func newMessageID() string {
	return messageIDs.next(time.Now()).String()
}

var messageIDs idSource

// idSource makes UUIDv7s. Its zero value is ready.
type idSource struct {
	mu   sync.Mutex
	last int64 // the last id's time: milliseconds << 12 | sequence
	pool [512]byte
	left int // how many of the pool's bytes, at its end, are unused
}

// idRandomBytes is what an id takes from the pool: bytes 8 to 15 of the
// UUID. Bytes 0 to 7 are its time, version and sequence.
const idRandomBytes = 8

func (s *idSource) next(now time.Time) uuid.UUID {
	var id uuid.UUID
	s.mu.Lock()
	if s.left == 0 {
		// crypto/rand.Read does not fail: it crashes the program when the
		// system cannot give randomness.
		_, _ = rand.Read(s.pool[:])
		s.left = len(s.pool)
	}
	copy(id[8:], s.pool[len(s.pool)-s.left:])
	s.left -= idRandomBytes
	// As uuid's getV7Time: a time at or before the last id's goes one past
	// it, so that ids increase even when the clock does not.
	nano := now.UnixNano()
	milli := nano / int64(time.Millisecond)
	t := milli<<12 | (nano-milli*int64(time.Millisecond))>>8
	if t <= s.last {
		t = s.last + 1
	}
	s.last = t
	s.mu.Unlock()
	milli, seq := t>>12, t&0xfff
	id[0] = byte(milli >> 40)
	id[1] = byte(milli >> 32)
	id[2] = byte(milli >> 24)
	id[3] = byte(milli >> 16)
	id[4] = byte(milli >> 8)
	id[5] = byte(milli)
	id[6] = 0x70 | byte(seq>>8)&0x0f // version 7
	id[7] = byte(seq)
	id[8] = id[8]&0x3f | 0x80 // variant 10
	return id
}
