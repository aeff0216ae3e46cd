package fxconsole_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxconsole"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hostileTopic is a topic name that tries every way out of an SVG
// attribute and text.
const hostileTopic = `orders"><script>alert(1)</script><x y='` + "`"

// setBacklog makes topic's outbox rows n, written at written (the lag's
// start) and due then.
func setBacklog(t *testing.T, db *sql.DB, topic string, n int, written time.Time) {
	t.Helper()
	_, err := db.Exec("DELETE FROM fxcqrs_outbox WHERE topic = ?", topic)
	require.NoError(t, err)
	for i := range n {
		_, err := db.Exec("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata, created_ns, due_ns) VALUES (?, ?, '{}', '{}', ?, ?)",
			topic, fmt.Sprintf("m-%s-%d", topic, i), written.UnixNano(), written.UnixNano())
		require.NoError(t, err)
	}
}

// drawn reads chart id of a page back: each line's values, from its
// polyline's points mapped back through the chart's scale, and from its
// data-values, which must agree.
func drawn(t *testing.T, body, id string) map[string][]float64 {
	t.Helper()
	fig := regexp.MustCompile(`(?s)<figure class="chart" id="` + id + `">(.*?)</figure>`).FindStringSubmatch(body)
	require.NotNil(t, fig, "chart %s", id)
	svg := regexp.MustCompile(`data-ymax="([^"]+)" data-top="([^"]+)" data-bottom="([^"]+)"`).FindStringSubmatch(fig[1])
	require.NotNil(t, svg, "chart %s has no scale", id)
	ymax, top, bottom := parse(t, svg[1]), parse(t, svg[2]), parse(t, svg[3])
	out := map[string][]float64{}
	for _, m := range regexp.MustCompile(`<polyline class="line s\d" points="([^"]*)" data-series="([^"]*)" data-values="([^"]*)">`).FindAllStringSubmatch(fig[1], -1) {
		name := html.UnescapeString(m[2])
		var fromPoints []float64
		for _, p := range strings.Fields(m[1]) {
			_, y, ok := strings.Cut(p, ",")
			require.True(t, ok, p)
			fromPoints = append(fromPoints, (bottom-parse(t, y))/(bottom-top)*ymax)
		}
		var values []float64
		for _, v := range strings.Fields(m[3]) {
			values = append(values, parse(t, v))
		}
		require.Len(t, fromPoints, len(values), name)
		for i := range values {
			assert.InDelta(t, values[i], fromPoints[i], ymax/200, "%s %s point %d: drawn where its value is", id, name, i)
		}
		out[name] = fromPoints
	}
	return out
}

func parse(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err, s)
	return f
}

func rounded(vs []float64) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = float64(int(v + 0.5))
	}
	return out
}

// A backlog that grows then drains, sampled on a fake clock: the charts
// draw each sample where its value is, the ring keeps the last ones, the
// page says how old the newest is, a replay is marked, and every name
// stays escaped, in the SVG too.
func TestChartsFollowTheSamples(t *testing.T) {
	ctx := context.Background()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	require.NoError(t, fxsaga.Migrate(ctx, d.DB, d.Dialect, fxsaga.Tables{}))
	clock := outboxtest.NewClock(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, clock.Now)
	require.NoError(t, err)
	_, err = d.DB.Exec("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (7, ?, 'm-7', '{}', '{}', ?, ?)",
		hostileTopic, "refused: "+hostile, clock.Now().UnixNano())
	require.NoError(t, err)
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	var relayed uint64
	c, err := fxconsole.New(admin, store, fxconsole.Config{
		InsecureAllowEveryone: true, Actions: true, Now: clock.Now, Samples: 6, SampleEvery: time.Minute,
	}, fxconsole.WithOutboxStats(func() fxoutbox.Stats { return fxoutbox.Stats{Sent: relayed} }),
		fxconsole.WithChecks(fxcqrs.Check{Name: "fxoutbox.relay", Readiness: true, Run: func(context.Context) error { return errors.New("behind: " + hostile) }}))
	require.NoError(t, err)

	backlog := []int{0, 2, 5, 9, 4, 0, 3} // the first falls out of a ring of six
	written := clock.Now()
	for i, n := range backlog {
		setBacklog(t, d.DB, hostileTopic, n, written)
		setBacklog(t, d.DB, "audit", 1, clock.Now())
		relayed += uint64(10 * i)
		require.NoError(t, c.Sample(ctx, clock.Now()))
		if i == 3 { // the worst moment: a replay, marked on the charts
			rec := post(t, c, "/dead/replay", url.Values{"id": {"7"}, "why": {"mended " + hostile}}, "Sec-Fetch-Site", "same-origin")
			require.Equal(t, http.StatusSeeOther, rec.Code)
		}
		clock.Advance(time.Minute)
	}
	_, err = d.DB.Exec("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (8, ?, 'm-8', '{}', '{}', ?, ?)",
		hostileTopic, "refused again: "+hostile, clock.Now().UnixNano())
	require.NoError(t, err)
	samples := c.Samples()
	require.Len(t, samples, 6, "bounded")
	assert.Equal(t, written.Add(time.Minute), samples[0].At, "the oldest dropped first")

	code, body := get(t, c, "/")
	require.Equal(t, http.StatusOK, code)
	lines := drawn(t, body, "chart-backlog")
	assert.Equal(t, []float64{2, 5, 9, 4, 0, 3}, rounded(lines[hostileTopic]), "grows, drains, grows again")
	assert.Equal(t, []float64{1, 1, 1, 1, 1, 1}, rounded(lines["audit"]))
	lag := drawn(t, body, "chart-lag")[hostileTopic]
	assert.Equal(t, []float64{60, 120, 180, 240, 0, 360}, rounded(lag), "seconds since the rows were written, 0 when none waits")
	assert.Equal(t, []float64{20, 30, 40, 50, 60}, rounded(drawn(t, body, "chart-rate")["relayed"]), "rows per minute, between samples")
	assert.Equal(t, []float64{1, 1, 1, 0, 0, 0}, rounded(drawn(t, body, "chart-failures")["dead letters"]))
	assert.Contains(t, body, `<g class="mark"><title>repair: 10:03:00 replay dead letters 7 by console: mended &lt;script&gt;`, "the replay, marked where it happened")
	assert.Contains(t, body, "newest sample 1m0s ago", "how old the newest sample is")
	assert.Contains(t, body, "not sampling", "Start was not called")

	// Is something wrong? First on the page.
	wrong := body[strings.Index(body, `id="wrong"`):strings.Index(body, `id="freshness"`)]
	assert.Contains(t, wrong, "1 failing")
	assert.Contains(t, wrong, "behind: &lt;script&gt;")
	assert.Contains(t, wrong, "2 → <b>3</b> rows in 5m0s", "the backlog that grows again")
	assert.Contains(t, wrong, "refused again: &lt;script&gt;", "the newest dead letter")
	assert.Contains(t, wrong, "Worst lag")
	assert.Less(t, strings.Index(body, `id="wrong"`), strings.Index(body, `id="chart-backlog"`))

	code, body = get(t, c, "/topic?name="+url.QueryEscape(hostileTopic))
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, []float64{2, 5, 9, 4, 0, 3}, rounded(drawn(t, body, "chart-topic-backlog")["rows"]))
	assert.Contains(t, body, "<b>3</b> rows waiting")

	for _, path := range []string{"/", "/topic?name=" + url.QueryEscape(hostileTopic)} {
		_, body := get(t, c, path)
		assert.NotContains(t, body, "<script>", path)
		assert.NotContains(t, body, `"><x`, path)
		assert.NotContains(t, body, `<x y=`, path)
		assert.Contains(t, body, "&lt;script&gt;", path)
	}
}

// Start samples at once and then at every interval of its clock, until
// Stop.
func TestSamplingLoop(t *testing.T) {
	admin, store, _ := rig(t)
	clock := outboxtest.NewClock(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	waiting := make(chan struct{}, 1)
	after := func(d time.Duration) <-chan time.Time {
		ch := clock.After(d)
		waiting <- struct{}{}
		return ch
	}
	c, err := fxconsole.New(admin, store, fxconsole.Config{InsecureAllowEveryone: true, Now: clock.Now, After: after, SampleEvery: time.Minute})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, c.Start(ctx))
	t.Cleanup(func() { require.NoError(t, c.Stop(ctx)) })
	require.Error(t, c.Start(ctx), "started once")
	require.Len(t, c.Samples(), 1, "a sample at once")
	for n := 2; n <= 4; n++ {
		select { // the loop waits on the clock: move it
		case <-waiting:
		case <-time.After(time.Minute):
			t.Fatal("the sampling loop never waited for its next sample")
		}
		clock.Advance(time.Minute)
		require.Eventually(t, func() bool { return len(c.Samples()) == n }, time.Minute, time.Millisecond)
	}
	s := c.Samples()
	assert.Equal(t, time.Minute, s[3].At.Sub(s[2].At))
	assert.Equal(t, 2, s[3].DeadLetters, "the rig's outbox letter and its inbound one")
	assert.Equal(t, 1, s[3].ParkedKeys, "the rig's parked key")
	assert.Equal(t, 1, s[3].SagasFailed)
	_, body := get(t, c, "/")
	assert.NotContains(t, body, "not sampling")
}

// A saga waiting at its second step is drawn from its stored shape: the
// step it waits at marked, with its deadline, the step before done; the
// definition is drawn on its list; every name escaped.
func TestSagaDiagram(t *testing.T) {
	admin, store, _ := rig(t)
	ctx := context.Background()
	deadline := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)
	shape := `{"name":"booking","steps":[{"name":"Reserve"},{"name":"Pay` + strings.ReplaceAll(hostile, `"`, `\"`) + `","awaits":"payments.Confirmed","within":600000000000,"onTimeout":"Cancel"},{"name":"Ship"}]}`
	require.NoError(t, store.Create(ctx, fxsaga.State{
		ID: "w-1", Name: "booking", Status: fxsaga.Waiting, Step: 1, Version: 1, Context: []byte(`{}`),
		Awaiting: "payments.Confirmed", Key: "b-1", Deadline: deadline, Shape: []byte(shape),
	}))
	c, err := fxconsole.New(admin, store, fxconsole.Config{InsecureAllowEveryone: true})
	require.NoError(t, err)
	code, body := get(t, c, "/sagas/w-1")
	require.Equal(t, http.StatusOK, code)
	here := regexp.MustCompile(`data-node="([^"]+)" data-here="true"`).FindAllStringSubmatch(body, -1)
	require.Len(t, here, 1)
	assert.Equal(t, "act1", here[0][1], "stands at the wait")
	assert.Contains(t, body, `<g class="act done" id="node-act0"`, "the step before, done")
	assert.Contains(t, body, `<g class="act" id="node-act2"`, "the step after, not yet")
	assert.Contains(t, body, "deadline 2026-12-07T11:00:00Z")
	assert.Contains(t, body, "waits for payments.Confirmed within 10m0s")
	assert.Contains(t, body, "no event in time: Cancel")
	assert.Contains(t, body, `<desc id="saga-diagram-d">3 steps`, "a text alternative")
	assert.NotContains(t, body, "<script>")
	assert.Contains(t, body, "Pay&lt;script&gt;")

	_, body = get(t, c, "/sagas?name=booking&status=WAITING")
	assert.Contains(t, body, `id="saga-diagram"`, "the definition, drawn on its list")
	assert.NotContains(t, body, `data-here="true"`, "a definition stands nowhere")
}
