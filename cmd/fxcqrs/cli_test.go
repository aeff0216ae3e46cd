package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// The command line on each database: the outbox's status, a dead letter
// listed, shown, replayed; sagas counted, listed, shown with their
// diagram, resolved; JSON for scripts.
func TestCommandLine(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		ctx := context.Background()
		require.NoError(t, fxsaga.Migrate(ctx, d.DB, d.Dialect, fxsaga.Tables{}))
		now := time.Now().UnixNano()
		_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"),
			41, "orders", "m-41", []byte(`{"id":41}`), `{"name":"OrderPlaced"}`, "message too large", now)
		require.NoError(t, err)
		_, err = d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?)"),
			"payments", "m-9", []byte(`{}`), `{}`, now)
		require.NoError(t, err)
		store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		shape, err := json.Marshal(fxsaga.Shape{Name: "order", Steps: []fxsaga.ShapeStep{{Name: "Reserve"}, {Name: "Charge"}}})
		require.NoError(t, err)
		require.NoError(t, store.Create(ctx, fxsaga.State{
			ID: "failed-1", Name: "order", Status: fxsaga.Failed, Step: 1, Version: 3,
			Context: []byte(`{"id":7}`), Error: "step Charge: refused; compensating Charge: down", Shape: shape,
		}))
		require.NoError(t, store.Create(ctx, fxsaga.State{
			ID: "waiting-1", Name: "order", Status: fxsaga.Waiting, Step: 1, Version: 2,
			Context: []byte(`{}`), Awaiting: "orders.Paid", Key: "8", Deadline: time.Now().Add(time.Hour),
		}))

		cli := func(args ...string) string {
			t.Helper()
			var out bytes.Buffer
			require.NoError(t, run(append([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN}, args...), &out), "fxcqrs %v", args)
			return out.String()
		}
		status := cli("outbox", "status")
		assert.Regexp(t, `orders\s+0\s+0\s+0s\s+1`, status)
		assert.Regexp(t, `payments\s+1\s+1\s+\S+\s+0`, status)
		assert.Contains(t, status, "scheduled: 0, next due none")

		list := cli("dead", "list", "-name", "OrderPlaced")
		assert.Regexp(t, `41\s+\(default\)\s+orders\s+OrderPlaced\s+m-41`, list)
		assert.NotContains(t, cli("dead", "list", "-error", "timeout"), "m-41")
		var letters []fxoutbox.DeadLetter
		require.NoError(t, json.Unmarshal([]byte(cli("-json", "dead", "list")), &letters))
		require.Len(t, letters, 1)
		assert.Equal(t, "m-41", letters[0].MessageID)
		assert.Contains(t, cli("dead", "show", "41"), `{"id":41}`)
		assert.Contains(t, cli("dead", "replay", "-who", "ops", "-why", "limit raised", "41"), "replay: 1 of 1")
		assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE message_id = 'm-41'"), "back in the outbox")

		// A key parked by a subscription with fxbus.InOrder: released.
		park := message.NewMessage("m-k1", []byte(`{"id":7}`))
		park.Metadata.Set(fxbus.MetadataKey, "order-7")
		admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
		require.NoError(t, err)
		require.NoError(t, admin.RecordParked(context.Background(), "orders", "order-7", park, errors.New("refused")))
		assert.Contains(t, cli("dead", "release", "-topic", "orders", "-key", "order-7", "-who", "ops", "-why", "fixed"), "release: 1 letters of key order-7")
		assert.Contains(t, cli("dead", "show", "-1"), "parks key: order-7")
		assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE message_id = 'm-k1'"), "back in the outbox")

		assert.Regexp(t, `order\s+FAILED\s+1`, cli("saga", "list"))
		assert.Contains(t, cli("saga", "list", "-status", "waiting"), "orders.Paid 8 until")
		show := cli("saga", "show", "failed-1")
		assert.Contains(t, show, "status:  FAILED at step 1")
		assert.Contains(t, show, "class comp1 here")
		assert.Contains(t, cli("saga", "resolve", "-who", "ops", "-why", "refunded by hand", "failed-1"), "is RESOLVED")
		assert.Contains(t, cli("saga", "show", "failed-1"), "op:resolve    ops: refunded by hand")

		var out bytes.Buffer
		err = run([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "saga", "retry", "-who", "ops", "-why", "again", "failed-1"}, &out)
		require.ErrorContains(t, err, "only a failed saga is retried")
		err = run([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "dead", "frobnicate"}, &out)
		require.ErrorContains(t, err, "unknown command")
		assert.True(t, strings.Contains(err.Error(), "usage"))
	})
}

// What a terminal would act on is escaped, wherever a letter's or a
// saga's untrusted text is printed: an escape sequence clears no screen
// and sets no title, a bidi override turns no text around.
func TestSafe(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, ünïcödé 文字":              "plain text, ünïcödé 文字",
		"\x1b[2J\x1b]0;pwned\x07":             `\x1b[2J\x1b]0;pwned\a`,
		"abc\u202edef":                        `abc\u202edef`,
		"bad \xff byte":                       `bad \xff byte`,
		"two\nlines\tand a tab":               `two\nlines\tand a tab`,
		"del \x7f and nul \x00 and bs \x08 x": `del \x7f and nul \x00 and bs \b x`,
	} {
		assert.Equal(t, want, safe(in, false), "%q", in)
	}
	assert.Equal(t, "two\nlines\tand a tab \\x1b", safe("two\nlines\tand a tab \x1b", true), "a payload keeps its layout")
	assert.Equal(t, `a \x1b[2J b`, oneLine("a\n\x1b[2J  b", 80))
}

// A hostile dead letter, listed and shown: no byte of its escape
// sequences reaches the terminal; -json writes a text payload as text as
// well as in base64.
func TestHostileLetter(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	hostile := "\x1b[2J\x1b]0;pwned\x07"
	_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		7, "orders"+hostile, "m-7"+hostile, []byte(`{"note":"`+hostile+`"}`), `{"name":"Evil\u001b[2J"}`, "refused: "+hostile, time.Now().UnixNano())
	require.NoError(t, err)
	cli := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		require.NoError(t, run(append([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN}, args...), &out), "fxcqrs %v", args)
		return out.String()
	}
	for _, out := range []string{cli("dead", "list"), cli("dead", "show", "7"), cli("dead", "show", "--", "7")} {
		assert.NotContains(t, out, "\x1b", out)
		assert.NotContains(t, out, "\x07", out)
		assert.Contains(t, out, `\x1b[2J`)
	}
	var shown struct {
		Payload     []byte
		PayloadText string `json:"payloadText"`
	}
	require.NoError(t, json.Unmarshal([]byte(cli("-json", "dead", "show", "7")), &shown))
	assert.Equal(t, `{"note":"`+hostile+`"}`, shown.PayloadText)
	assert.Equal(t, shown.PayloadText, string(shown.Payload))
}

// dead show takes "--" before a negative id, as the README says and as
// replay and discard do.
func TestDeadShowNegativeID(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	require.NoError(t, admin.RecordParked(context.Background(), "orders", "order-7", message.NewMessage("m-parked", []byte(`{}`)), errors.New("refused")))
	var out bytes.Buffer
	require.NoError(t, run([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "dead", "show", "--", "-1"}, &out))
	assert.Contains(t, out.String(), "message:  m-parked")
	out.Reset()
	require.NoError(t, run([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "dead", "show", "-1"}, &out), "without --: still an id")
	assert.Contains(t, out.String(), "message:  m-parked")
}

// dead list: the newest first, a page at a time, with the total; -oldest
// for the other order.
func TestDeadListPages(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	for i := 1; i <= 1300; i++ {
		_, err := tx.Exec("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, 'orders', ?, '{}', '{}', 'refused', ?)",
			i, fmt.Sprintf("m-%d", i), int64(i)*int64(time.Second))
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	cli := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		require.NoError(t, run(append([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "dead", "list"}, args...), &out))
		return out.String()
	}
	first := cli()
	assert.Regexp(t, `(?m)^1300\s+\(default\)\s+orders`, first, "the newest first")
	assert.NotContains(t, first, "m-1200 ")
	assert.Contains(t, first, "letters 1-100 of 1300, the newest first; the next: -offset 100")
	last := cli("-offset", "1200")
	assert.Regexp(t, `(?m)^1\s+\(default\)\s+orders`, last, "paging reaches the oldest")
	assert.Contains(t, last, "letters 1201-1300 of 1300, the newest first\n")
	assert.Regexp(t, `(?m)^1\s+\(default\)\s+orders`, cli("-oldest", "-limit", "1"))
	assert.Contains(t, cli("-offset", "5000"), "none of 1300 letters")
}

// saga show -key: the saga of a booking, found by its business key, the
// unfinished one first.
func TestSagaShowByKey(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	ctx := context.Background()
	require.NoError(t, fxsaga.Migrate(ctx, d.DB, d.Dialect, fxsaga.Tables{}))
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	require.NoError(t, store.Create(ctx, fxsaga.State{ID: "old", Name: "booking", Status: fxsaga.Completed, Version: 3, Context: []byte(`{}`), BusinessKey: "b-1"}))
	require.NoError(t, store.Create(ctx, fxsaga.State{ID: "new", Name: "booking", Status: fxsaga.Waiting, Version: 2, Context: []byte(`{}`), BusinessKey: "b-1"}))
	var out bytes.Buffer
	require.NoError(t, run([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "saga", "show", "-key", "b-1"}, &out))
	assert.Contains(t, out.String(), "saga:    booking new")
	assert.Contains(t, out.String(), "key:     b-1")
	assert.Contains(t, out.String(), "(2 sagas have the key \"b-1\"; the others: old)")
	out.Reset()
	require.NoError(t, run([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "saga", "show", "-key", "b-1", "-saga", "booking"}, &out))
	assert.Contains(t, out.String(), "saga:    booking new")
	err = run([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "saga", "show", "-key", "b-2"}, &out)
	assert.ErrorContains(t, err, `no saga has the key "b-2"`)
}

// saga list: the newest first, a page at a time, with the total; -oldest
// for the other order.
func TestSagaListPages(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	ctx := context.Background()
	require.NoError(t, fxsaga.Migrate(ctx, d.DB, d.Dialect, fxsaga.Tables{}))
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	for i := 1; i <= 1300; i++ {
		_, err := tx.Exec("INSERT INTO fxcqrs_sagas (id, name, status, step, context, version, error, owner, lease_until_ns, created_ns) VALUES (?, 'booking', 'FAILED', 0, '{}', 1, 'refused', '', 0, ?)",
			fmt.Sprintf("s-%04d", i), int64(i)*int64(time.Second))
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	cli := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		require.NoError(t, run(append([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN, "saga", "list", "-status", "failed"}, args...), &out))
		return out.String()
	}
	first := cli()
	assert.Regexp(t, `(?m)^s-1300\s+booking`, first, "the newest first")
	assert.NotContains(t, first, "s-1200 ")
	assert.Contains(t, first, "sagas 1-100 of 1300, the newest first; the next: -offset 100")
	last := cli("-offset", "1200")
	assert.Regexp(t, `(?m)^s-0001\s+booking`, last, "paging reaches the oldest")
	assert.Contains(t, last, "sagas 1201-1300 of 1300, the newest first\n")
	assert.Regexp(t, `(?m)^s-0001\s+booking`, cli("-oldest", "-limit", "1"))
	assert.Contains(t, cli("-offset", "5000"), "none of 1300 sagas")
}
