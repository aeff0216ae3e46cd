package fxoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// During an incident the newest letters are the ones looked for: listed
// newest first, a page at a time, with the total, the inbound letters
// merged in by when they failed; the oldest reached by paging.
func TestDeadLetterPages(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		const outbound, inbound = 250, 5
		base := time.Now().Add(-time.Hour).UnixNano()
		tx, err := d.DB.Begin()
		require.NoError(t, err)
		for i := 1; i <= outbound; i++ {
			topic := "orders"
			if i%5 == 0 {
				topic = "payments"
			}
			_, err := tx.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"),
				i, topic, fmt.Sprintf("m-%d", i), []byte(`{}`), `{"name":"OrderPlaced"}`, "refused", base+int64(i)*int64(time.Millisecond))
			require.NoError(t, err)
		}
		require.NoError(t, tx.Commit())
		admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
		require.NoError(t, err)
		for i := range inbound { // failed now: the newest of all
			require.NoError(t, admin.RecordParked(ctx, "orders", fmt.Sprint("key-", i), message.NewMessage(fmt.Sprint("in-", i), []byte(`{}`)), errors.New("refused")))
		}

		total, err := admin.CountDead(ctx, fxoutbox.DeadLetterFilter{})
		require.NoError(t, err)
		assert.Equal(t, outbound+inbound, total)
		var seen []string
		for offset := 0; ; offset += 100 {
			page, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{NewestFirst: true, Limit: 100, Offset: offset})
			require.NoError(t, err)
			if len(page) == 0 {
				break
			}
			for _, l := range page {
				seen = append(seen, l.MessageID)
			}
		}
		require.Len(t, seen, total, "every letter on one page, once")
		assert.Equal(t, "in-4", seen[0], "the newest first")
		assert.Equal(t, fmt.Sprint("m-", outbound), seen[inbound], "then the newest outbound one")
		assert.Equal(t, "m-1", seen[len(seen)-1], "paging reaches the oldest")

		oldest, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Limit: 1})
		require.NoError(t, err)
		assert.Equal(t, "m-1", oldest[0].MessageID, "the default order stays the oldest first")

		payments, err := admin.CountDead(ctx, fxoutbox.DeadLetterFilter{Topic: "payments"})
		require.NoError(t, err)
		assert.Equal(t, outbound/5, payments)
		named, err := admin.CountDead(ctx, fxoutbox.DeadLetterFilter{Name: "OrderPlaced", ErrorContains: "refused"})
		require.NoError(t, err)
		assert.Equal(t, outbound, named, "a name is read from the metadata: the inbound ones have none")
	})
}

// Every repair keeps who and why: a replay, a discard or a release
// without a reason is refused, and nothing changes.
func TestRepairsNeedWhy(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	ctx := context.Background()
	_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		1, "orders", "m-1", []byte(`{}`), `{}`, "refused", time.Now().UnixNano())
	require.NoError(t, err)
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	require.NoError(t, admin.RecordParked(ctx, "orders", "k", message.NewMessage("in-1", []byte(`{}`)), errors.New("refused")))
	for _, why := range []string{"", " \t"} {
		_, err = admin.Replay(ctx, []int64{1}, "ops", why)
		assert.ErrorContains(t, err, "replay: say why")
		_, err = admin.Discard(ctx, []int64{1}, "ops", why)
		assert.ErrorContains(t, err, "say why")
		_, err = admin.Release(ctx, "orders", "k", "ops", why)
		assert.ErrorContains(t, err, "release: say why")
	}
	assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"), "nothing replayed")
	assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"))
	n, err := admin.Replay(ctx, []int64{1}, "ops", "the limit was raised")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// The order is by when a letter failed, not by its id: an outbox letter
// keeps its row's id, and a row retried for long fails after the rows
// written after it.
func TestDeadLettersByWhenTheyFailed(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	ctx := context.Background()
	for id, failed := range map[int]int64{1: 3, 2: 1, 3: 2} {
		_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, 'orders', ?, '{}', '{}', 'refused', ?)"),
			id, fmt.Sprint("m-", id), failed*int64(time.Second))
		require.NoError(t, err)
	}
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	ids := func(f fxoutbox.DeadLetterFilter) []string {
		letters, err := admin.ListDead(ctx, f)
		require.NoError(t, err)
		var out []string
		for _, l := range letters {
			out = append(out, l.MessageID)
		}
		return out
	}
	assert.Equal(t, []string{"m-1", "m-3", "m-2"}, ids(fxoutbox.DeadLetterFilter{NewestFirst: true}))
	assert.Equal(t, []string{"m-2", "m-3", "m-1"}, ids(fxoutbox.DeadLetterFilter{}))
	assert.Equal(t, []string{"m-3"}, ids(fxoutbox.DeadLetterFilter{NewestFirst: true, Offset: 1, Limit: 1}))
}
