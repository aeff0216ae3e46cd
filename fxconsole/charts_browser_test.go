package fxconsole_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxconsole"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// drawnLine is a chart's line as the browser has it.
type drawnLine struct {
	Series string `json:"series"`
	Points string `json:"points"`
	Values string `json:"values"`
}

// drawnChart is a chart as the browser has it: its scale and lines, and
// the size the browser gave its picture.
type drawnChart struct {
	YMax   float64     `json:"ymax"`
	Top    float64     `json:"top"`
	Bottom float64     `json:"bottom"`
	Width  float64     `json:"width"`
	Lines  []drawnLine `json:"lines"`
}

// values maps the line's drawn points back through the chart's scale.
func (c drawnChart) values(t *testing.T, series string) []float64 {
	t.Helper()
	for _, l := range c.Lines {
		if l.Series != series {
			continue
		}
		var out []float64
		for _, p := range strings.Fields(l.Points) {
			_, y, _ := strings.Cut(p, ",")
			v, err := strconv.ParseFloat(y, 64)
			require.NoError(t, err)
			out = append(out, float64(int((c.Bottom-v)/(c.Bottom-c.Top)*c.YMax+0.5)))
		}
		return out
	}
	t.Fatalf("no line %q in %+v", series, c.Lines)
	return nil
}

const readChart = `(id => {
	const svg = document.querySelector("#" + id + " svg");
	return {ymax: +svg.dataset.ymax, top: +svg.dataset.top, bottom: +svg.dataset.bottom, width: svg.getBoundingClientRect().width,
		lines: Array.from(svg.querySelectorAll("polyline")).map(p => ({series: p.dataset.series, points: p.getAttribute("points"), values: p.dataset.values}))};
})`

// In a real browser, over samples a fake clock paces: a backlog that
// grows then drains, a dead letter replayed at the worst moment, a saga
// stopped at a wait. The charts' drawn points, read back from the SVG
// the browser has, follow the data; the overview, a topic's page and the
// saga's page are screenshotted (go test -artifacts keeps them), the
// overview at a phone's width too; no hostile name runs.
func TestChartsInABrowser(t *testing.T) {
	exe := chromium(t)
	ctx := context.Background()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	require.NoError(t, fxsaga.Migrate(ctx, d.DB, d.Dialect, fxsaga.Tables{}))
	clock := outboxtest.NewClock(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC))
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, clock.Now)
	require.NoError(t, err)
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	require.NoError(t, store.Create(ctx, fxsaga.State{
		ID: "booking-1", Name: "booking", Status: fxsaga.Waiting, Step: 1, Version: 2, Context: []byte(`{"booking":"b-1"}`),
		Awaiting: "payments.Confirmed", Key: "b-1", Deadline: clock.Now().Add(75 * time.Minute),
		Shape: []byte(`{"name":"booking","steps":[{"name":"ReserveRoom"},{"name":"TakePayment","awaits":"payments.Confirmed","within":3600000000000,"onTimeout":"CancelBooking"},{"name":"SendConfirmation"}]}`),
	}))
	require.NoError(t, store.Create(ctx, fxsaga.State{ID: "booking-0", Name: "booking", Status: fxsaga.Failed, Step: 0, Version: 3, Context: []byte(`{}`), Error: "refund refused"}))
	var relayed, handled uint64
	c, err := fxconsole.New(admin, store, fxconsole.Config{
		InsecureAllowEveryone: true, Actions: true, Now: clock.Now, SampleEvery: time.Minute,
		Who: func(*http.Request) string { return "browser test" },
	},
		fxconsole.WithOutboxStats(func() fxoutbox.Stats { return fxoutbox.Stats{Sent: relayed} }),
		fxconsole.WithBusStats(func() fxbus.Stats { return fxbus.Stats{Handled: handled} }),
		fxconsole.WithChecks(
			fxcqrs.Check{Name: "fxoutbox.schema", Run: func(context.Context) error { return nil }},
			fxcqrs.Check{Name: "fxoutbox.relay", Readiness: true, Run: func(context.Context) error {
				return errors.New("the relay is 2m0s behind, over Config.MaxLag (1m0s)")
			}},
		))
	require.NoError(t, err)

	const hostileName = `audit<img src=x onerror="window.pwned=1">`
	orders := []int{0, 4, 10, 18, 27, 36, 30, 21, 12, 5, 0, 2}
	written := clock.Now()
	for i, n := range orders {
		if n == 0 {
			written = clock.Now()
		}
		setBacklog(t, d.DB, "orders", n, written)
		setBacklog(t, d.DB, hostileName, i%3, clock.Now().Add(-20*time.Second))
		relayed += uint64(40 * (12 - i))
		handled += uint64(30 + 5*i)
		if i == 3 {
			_, err := d.DB.Exec("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (1, 'orders', 'm-1', '{}', '{\"name\":\"OrderPlaced\"}', 'message too large', ?)", clock.Now().UnixNano())
			require.NoError(t, err)
		}
		if i == 6 {
			rec := post(t, c, "/dead/replay", url.Values{"id": {"1"}, "why": {"the broker's limit was raised"}}, "Sec-Fetch-Site", "same-origin")
			require.Equal(t, http.StatusSeeOther, rec.Code)
		}
		require.NoError(t, c.Sample(ctx, clock.Now()))
		clock.Advance(time.Minute)
	}
	clock.Advance(-40 * time.Second) // the page is looked at 20s after the newest sample

	mux := http.NewServeMux()
	mux.Handle("/ops/", http.StripPrefix("/ops", c))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	browser, cancelTimeout := context.WithTimeout(browser, 3*time.Minute) // only a hang reaches it
	t.Cleanup(cancelTimeout)
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(browser, steps...))
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(t.ArtifactDir(), name+".png"), png, 0o644))
	}
	chartOf := func(id string) drawnChart {
		t.Helper()
		ch, err := chromedp.Run(browser, chromedp.Evaluate[drawnChart](readChart+`("`+id+`")`))
		require.NoError(t, err, id)
		return ch
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, sel)
		return s
	}

	do(chromedp.Navigate(srv.URL + "/ops/"))
	backlog := chartOf("chart-backlog")
	// 31, not 30: the replay put the letter back in the outbox.
	assert.Equal(t, []float64{0, 4, 10, 18, 27, 36, 31, 21, 12, 5, 0, 2}, backlog.values(t, "orders"), "grows, drains: drawn where the samples are")
	assert.Equal(t, float64(50), backlog.YMax, "the axis' top: the next round number above 36")
	assert.Greater(t, backlog.Width, 500.0, "drawn at the page's width")
	assert.Equal(t, []float64{0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0}, chartOf("chart-failures").values(t, "dead letters"), "the letter, until its replay")
	assert.Equal(t, []float64{440, 400, 360, 320, 280, 240, 200, 160, 120, 80, 40}, chartOf("chart-rate").values(t, "relayed"), "rows per minute")
	assert.Equal(t, []float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, chartOf("chart-sagas").values(t, "waiting"))
	assert.Contains(t, text("#health"), "1 failing")
	assert.NotContains(t, text("#growing"), "orders", "draining: 31 five minutes ago, 2 now")
	assert.Contains(t, text("#growing"), "audit<img", "shown as text")
	assert.Contains(t, text("#freshness"), "newest sample 20s ago")
	marks, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll("#chart-backlog g.mark").length`))
	require.NoError(t, err)
	assert.Equal(t, 1, marks, "the replay, marked")
	pwned, err := chromedp.Run(browser, chromedp.Evaluate[bool](`window.pwned === 1`))
	require.NoError(t, err)
	assert.False(t, pwned, "a hostile topic name ran")
	shot("overview")
	do(chromedp.EmulateViewport(390, 844))
	phone := chartOf("chart-backlog")
	assert.Less(t, phone.Width, 390.0, "at a phone's width the chart fits the screen")
	assert.Equal(t, backlog.values(t, "orders"), phone.values(t, "orders"))
	shot("overview-phone")
	do(chromedp.EmulateViewport(1280, 900))

	do(chromedp.Navigate(srv.URL + "/ops/topic?name=orders"))
	topic := chartOf("chart-topic-backlog")
	assert.Equal(t, []float64{0, 4, 10, 18, 27, 36, 31, 21, 12, 5, 0, 2}, topic.values(t, "rows"))
	assert.Equal(t, []float64{0, 60, 120, 180, 240, 300, 360, 420, 480, 540, 0, 60}, chartOf("chart-topic-lag").values(t, "lag"), "the lag grows while nothing drains the oldest row")
	shot("topic")

	do(chromedp.Navigate(srv.URL + "/ops/sagas/booking-1"))
	here, err := chromedp.Run(browser, chromedp.Evaluate[string](`document.querySelector("#saga-diagram [data-here]").dataset.node`))
	require.NoError(t, err)
	assert.Equal(t, "act1", here, "stopped at the wait")
	note, err := chromedp.Run(browser, chromedp.Evaluate[string](`document.querySelector("#node-act1").textContent`))
	require.NoError(t, err)
	assert.Contains(t, note, "deadline 2026-12-07T10:15:00Z")
	shot("saga")
}
