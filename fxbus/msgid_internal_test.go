package fxbus

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The ids are UUIDv7s as uuid.NewV7 makes them: its time in milliseconds,
// version 7, the RFC 9562 variant.
func TestMessageIDIsUUIDv7(t *testing.T) {
	t.Parallel()
	var s idSource
	now := time.Date(2026, 12, 7, 15, 4, 5, 678_901_234, time.UTC)
	id := s.next(now)
	parsed, err := uuid.Parse(id.String())
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(7), parsed.Version())
	assert.Equal(t, uuid.RFC4122, parsed.Variant())
	sec, nsec := parsed.Time().UnixTime()
	assert.Equal(t, now.Truncate(time.Millisecond), time.Unix(sec, nsec).UTC())
	// The 12 bits after the version are the fraction of the millisecond,
	// in units of 256 ns, as uuid.NewV7 has them.
	assert.Equal(t, int(901_234>>8), int(id[6]&0x0f)<<8|int(id[7]))

	fresh, err := uuid.Parse(newMessageID())
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(7), fresh.Version())
}

// Ids increase, as strings too, when the clock stands still or goes back,
// and no two are the same, past many refills of the random pool.
func TestMessageIDsIncreaseAndDiffer(t *testing.T) {
	t.Parallel()
	var s idSource
	now := time.Date(2026, 12, 7, 15, 4, 5, 0, time.UTC)
	seen := map[uuid.UUID]bool{}
	randoms := map[[8]byte]bool{}
	prev := ""
	for i := range 2000 {
		at := now
		if i%3 == 2 {
			at = now.Add(-time.Second) // a clock set back
		}
		id := s.next(at)
		str := id.String()
		require.Greater(t, str, prev, "id %d", i)
		prev = str
		assert.False(t, seen[id], "id %d repeats", i)
		seen[id] = true
		randoms[[8]byte(id[8:])] = true
	}
	assert.Len(t, randoms, 2000, "every id has random bits of its own")
}
