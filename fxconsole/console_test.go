package fxconsole_test

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxconsole"
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

// hostile is a dead letter whose every field is an attack.
const hostile = `<script>alert("x")</script>`

// rig is a SQLite database with a hostile dead letter and a failed saga.
func rig(t *testing.T) (*fxoutbox.Admin, *fxsaga.SQL, outboxtest.Database) {
	t.Helper()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	require.NoError(t, fxsaga.Migrate(context.Background(), d.DB, d.Dialect, fxsaga.Tables{}))
	_, err := d.DB.Exec("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (7, ?, 'm-7', ?, ?, ?, 1)",
		"orders"+hostile, []byte(`{"note":"`+hostile+`"}`), `{"name":"OrderPlaced"}`, "refused: "+hostile)
	require.NoError(t, err)
	// And an inbound letter that parks a hostile key.
	_, err = d.DB.Exec("INSERT INTO fxcqrs_outbox_inbound_dead (topic, msg_key, message_id, payload, metadata, error, failed_ns) VALUES ('moves', ?, 'm-1', '{}', '{}', 'refused', 1)", hostile)
	require.NoError(t, err)
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	require.NoError(t, store.Create(context.Background(), fxsaga.State{ID: "s-1", Name: "order", Status: fxsaga.Failed, Version: 2, Context: []byte(`{}`), Error: hostile}))
	return admin, store, d
}

func get(t *testing.T, h http.Handler, path string, hdr ...string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func post(t *testing.T, h http.Handler, path string, form url.Values, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Without an authorization function the console is refused; a caller the
// function refuses sees nothing, payloads least of all.
func TestAuthorization(t *testing.T) {
	admin, store, _ := rig(t)
	_, err := fxconsole.New(admin, store, fxconsole.Config{})
	require.ErrorContains(t, err, "Config.Authorize is required")
	c, err := fxconsole.New(admin, store, fxconsole.Config{Authorize: func(r *http.Request) bool { return r.Header.Get("X-Operator") == "yes" }})
	require.NoError(t, err)
	for _, path := range []string{"/", "/dead", "/dead/7", "/sagas", "/sagas/s-1"} {
		code, body := get(t, c, path)
		assert.Equal(t, http.StatusForbidden, code, path)
		assert.NotContains(t, body, "note", path)
		code, _ = get(t, c, path, "X-Operator", "yes")
		assert.Equal(t, http.StatusOK, code, path)
	}
}

// Every value shown is escaped: a payload, a topic, an error text.
func TestEscapes(t *testing.T) {
	admin, store, _ := rig(t)
	c, err := fxconsole.New(admin, store, fxconsole.Config{InsecureAllowEveryone: true})
	require.NoError(t, err)
	// Samples, so that the charts draw the hostile names too.
	now := time.Now()
	require.NoError(t, c.Sample(context.Background(), now.Add(-time.Minute)))
	require.NoError(t, c.Sample(context.Background(), now))
	for _, path := range []string{"/", "/dead", "/dead/7", "/dead/-1", "/sagas?status=failed", "/sagas/s-1", "/topic?name=" + url.QueryEscape(hostile)} {
		code, body := get(t, c, path)
		require.Equal(t, http.StatusOK, code, path)
		assert.NotContains(t, body, "<script>", path)
		assert.Contains(t, body, "&lt;script&gt;", path)
	}
	_, body := get(t, c, "/dead/-1")
	assert.Contains(t, body, `<td id="key">&lt;script&gt;`, "the parked key, shown escaped")
}

// Read-only unless Actions: a POST changes nothing. With Actions, a
// cross-origin POST is refused and a same-origin one replays.
func TestActions(t *testing.T) {
	admin, store, d := rig(t)
	ro, err := fxconsole.New(admin, store, fxconsole.Config{InsecureAllowEveryone: true})
	require.NoError(t, err)
	form := url.Values{"id": {"7"}, "why": {"fixed"}}
	rec := post(t, ro, "/dead/replay", form, "Sec-Fetch-Site", "same-origin")
	assert.Equal(t, http.StatusForbidden, rec.Code)
	assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"), "read-only")
	_, body := get(t, ro, "/dead/7")
	assert.NotContains(t, body, `action="../dead/replay"`, "no forms when read-only")

	rw, err := fxconsole.New(admin, store, fxconsole.Config{
		InsecureAllowEveryone: true, Actions: true,
		Who: func(*http.Request) string { return "ops@example.com" },
	})
	require.NoError(t, err)
	rec = post(t, rw, "/dead/replay", form, "Sec-Fetch-Site", "cross-site")
	assert.Equal(t, http.StatusForbidden, rec.Code, "cross-origin")
	rec = post(t, rw, "/dead/replay", form, "Origin", "https://evil.example", "Host", "console.example")
	assert.Equal(t, http.StatusForbidden, rec.Code, "cross-origin, by Origin")
	assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"))
	for _, why := range []string{"", "  "} {
		rec = post(t, rw, "/dead/replay", url.Values{"id": {"7"}, "why": {why}}, "Sec-Fetch-Site", "same-origin")
		assert.Contains(t, rec.Header().Get("Location"), "say+why", "a replay without why: refused")
	}
	assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"), "nothing replayed without why")
	rec = post(t, rw, "/dead/replay", form, "Sec-Fetch-Site", "same-origin")
	assert.Equal(t, http.StatusSeeOther, rec.Code)
	assert.Contains(t, rec.Header().Get("Location"), "replay%3A+1+of+1")
	assert.Equal(t, 0, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"))
	assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE message_id = 'm-7'"))
	repairs, err := admin.Repairs(context.Background(), 1)
	require.NoError(t, err)
	assert.Equal(t, "ops@example.com", repairs[0].Who)

	rec = post(t, rw, "/sagas/s-1/resolve", url.Values{"why": {"refunded by hand"}}, "Sec-Fetch-Site", "same-origin")
	assert.Equal(t, http.StatusSeeOther, rec.Code)
	st, err := store.Load(context.Background(), "s-1")
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Resolved, st.Status)
}

// 1,300 letters: the newest is on the first page, the total is shown,
// and the older pages reach the oldest, filters kept.
func TestDeadLetterPaging(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	for i := 1; i <= 1300; i++ {
		_, err := tx.Exec("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, 'orders', ?, '{}', '{}', 'refused', ?)",
			i, fmt.Sprintf("m-%d", i), int64(i)*int64(time.Second))
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	c, err := fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true})
	require.NoError(t, err)

	code, body := get(t, c, "/dead?topic=orders")
	require.Equal(t, http.StatusOK, code)
	has := func(s string) bool { return strings.Contains(body, s) }
	assert.True(t, has("letters 1–200 of 1300, the newest first"))
	assert.True(t, has(`href="./dead/1300"`), "the newest on the first page")
	assert.False(t, has(`href="./dead/1100"`))
	assert.False(t, has(`id="newer"`))
	var path string
	pages := 1
	for {
		m := regexp.MustCompile(`id="older" href="dead\?([^"]+)"`).FindStringSubmatch(body)
		if m == nil {
			break
		}
		path = "/dead?" + html.UnescapeString(m[1])
		assert.Contains(t, path, "topic=orders", "the filter is kept")
		_, body = get(t, c, path)
		pages++
	}
	assert.Equal(t, 7, pages)
	assert.True(t, has("letters 1201–1300 of 1300"))
	assert.True(t, has(`href="./dead/1"`), "the last page has the oldest")
	assert.True(t, has(`id="newer"`))
	_, body = get(t, c, "/dead?offset=5000")
	assert.False(t, has(`id="older"`), "past the end: nothing older")
}

// The sagas of a booking, found by their business key.
func TestSagasByKey(t *testing.T) {
	admin, store, _ := rig(t)
	ctx := context.Background()
	require.NoError(t, store.Create(ctx, fxsaga.State{ID: "b1-done", Name: "booking", Status: fxsaga.Completed, Version: 3, Context: []byte(`{}`), BusinessKey: "b1"}))
	require.NoError(t, store.Create(ctx, fxsaga.State{ID: "b1-now", Name: "booking", Status: fxsaga.Waiting, Version: 2, Context: []byte(`{}`), BusinessKey: "b1"}))
	c, err := fxconsole.New(admin, store, fxconsole.Config{InsecureAllowEveryone: true})
	require.NoError(t, err)
	_, body := get(t, c, "/sagas?key=b1")
	now, done := strings.Index(body, `href="./sagas/b1-now"`), strings.Index(body, `href="./sagas/b1-done"`)
	require.True(t, now > 0 && done > 0, "both listed")
	assert.Less(t, now, done, "the unfinished one first")
	_, body = get(t, c, "/sagas?key=b2")
	assert.True(t, strings.Contains(body, `id="no-sagas"`))
	_, body = get(t, c, "/sagas/b1-now")
	assert.True(t, strings.Contains(body, `<td id="business-key">b1</td>`))
}

// 1,300 failed sagas: the newest is on the first page, the total is
// shown, and the older pages reach the oldest, the filter kept.
func TestSagaPaging(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	require.NoError(t, fxsaga.Migrate(context.Background(), d.DB, d.Dialect, fxsaga.Tables{}))
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	for i := 1; i <= 1300; i++ {
		_, err := tx.Exec("INSERT INTO fxcqrs_sagas (id, name, status, step, context, version, error, owner, lease_until_ns, created_ns) VALUES (?, 'booking', 'FAILED', 0, '{}', 1, 'refused', '', 0, ?)",
			fmt.Sprintf("s-%04d", i), int64(i)*int64(time.Second))
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	c, err := fxconsole.New(nil, store, fxconsole.Config{InsecureAllowEveryone: true})
	require.NoError(t, err)

	code, body := get(t, c, "/sagas?status=FAILED")
	require.Equal(t, http.StatusOK, code)
	has := func(s string) bool { return strings.Contains(body, s) }
	assert.True(t, has("sagas 1–200 of 1300, the newest first"))
	assert.True(t, has(`sagas/s-1300"`), "the newest on the first page")
	assert.False(t, has(`sagas/s-1100"`))
	assert.False(t, has(`id="newer"`))
	pages := 1
	for {
		m := regexp.MustCompile(`id="older" href="[^"]*sagas\?([^"]+)"`).FindStringSubmatch(body)
		if m == nil {
			break
		}
		path := "/sagas?" + html.UnescapeString(m[1])
		assert.Contains(t, path, "status=FAILED", "the filter is kept")
		_, body = get(t, c, path)
		pages++
	}
	assert.Equal(t, 7, pages)
	assert.True(t, has("sagas 1201–1300 of 1300"))
	assert.True(t, has(`sagas/s-0001"`), "the last page has the oldest")
	assert.True(t, has(`id="newer"`))
}
