package fxoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder is a publisher that keeps the ids it was given, in order.
type recorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *recorder) Publish(_ string, msgs ...*message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		r.ids = append(r.ids, m.UUID)
	}
	return nil
}

func (r *recorder) Close() error { return nil }

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

// A key's row that commits after a row of another key with a higher id
// was published (transactions commit in another order than they took
// their ids) is still sent before the key's next row: the relay does not
// read its lane only after the last id it published. Found by
// TestOrderThroughKills on NATS (the stream held a key's 33 before its
// 32), with producers writing one lane from two replicas at once.
// (SQLite has one writer: its rows commit in their ids' order.)
func TestRelaySendsALateCommitBeforeItsKeysNextRow(t *testing.T) {
	t.Parallel()
	for _, dialect := range []fxoutbox.Dialect{fxoutbox.PostgreSQL, fxoutbox.MySQL} {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			lateCommit(t, openDatabase(t, dialect))
		})
	}
}

func lateCommit(t *testing.T, d database) {
	tp := fmt.Sprintf("late_%d", rand.Uint32())
	var rec recorder
	b, err := fxbus.New(fxbus.Config{Publisher: &rec}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
		PollInterval: 10 * time.Millisecond, ProgressInterval: time.Hour, // progress is not recorded meanwhile
	}}, nil)
	require.NoError(t, err)
	require.NoError(t, o.Start(context.Background()))
	defer func() { require.NoError(t, o.Stop(context.Background())) }()
	row := func(id, key string) []any {
		return []any{tp, 0, id, []byte("{}"), fmt.Sprintf(`{%q:%q,%q:"Keyed"}`, fxbus.MetadataKey, key, fxbus.MetadataName), time.Now().UnixNano()}
	}
	ins := d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?, ?)")

	late, err := d.DB.Begin() // k's first row takes its id, and commits late
	require.NoError(t, err)
	defer func() { _ = late.Rollback() }() // when the test fails before the commit
	_, err = late.Exec(ins, row("k-1", "k")...)
	require.NoError(t, err)
	_, err = d.DB.Exec(ins, row("z-1", "z")...) // a higher id, committed and published first
	require.NoError(t, err)
	waitFor(t, func() bool { return slices.Contains(rec.got(), "z-1") })
	require.NoError(t, late.Commit())
	_, err = d.DB.Exec(ins, row("k-2", "k")...) // k's next row, after its first committed
	require.NoError(t, err)
	waitFor(t, func() bool { return slices.Contains(rec.got(), "k-2") })
	got := rec.got()
	require.Contains(t, got, "k-1", "k-2 was sent and k-1, committed before it was written, was not: %v", got)
	require.Less(t, slices.Index(got, "k-1"), slices.Index(got, "k-2"), "k's rows in order: %v", got)

	// More passes over the lane, its progress still unrecorded: what was
	// sent, the late row included, is skipped, never sent again.
	_, err = d.DB.Exec(ins, row("z-2", "z")...)
	require.NoError(t, err)
	waitFor(t, func() bool { return slices.Contains(rec.got(), "z-2") })
	got = rec.got()
	for _, id := range []string{"z-1", "k-1", "k-2", "z-2"} {
		assert.Equal(t, 1, countOf(got, id), "%s sent once: %v", id, got)
	}
}

func countOf(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}
