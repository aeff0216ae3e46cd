package fxconsole_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
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

// chromium is Debian's headless Chromium, or the test skips (fails when
// FXCQRS_REQUIRE_SERVICES=1, as in CI, which installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("FXCQRS_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	if os.Getenv("FXCQRS_REQUIRE_SERVICES") == "1" {
		t.Fatal("no Chromium (FXCQRS_CHROMIUM, /usr/bin/chromium) and FXCQRS_REQUIRE_SERVICES=1: apt-get install chromium")
	}
	t.Skip("no Chromium: set FXCQRS_CHROMIUM, or apt-get install chromium")
	return ""
}

var errRefused = errors.New("message too large")

// refusing refuses every message until mended, then hands them to the
// in-process broker.
type refusing struct {
	*gochannel.GoChannel
	mended atomic.Bool
}

func (p *refusing) Publish(topic string, msgs ...*message.Message) error {
	if !p.mended.Load() {
		return errRefused
	}
	return p.GoChannel.Publish(topic, msgs...)
}

type Refused struct{ N int }

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

// In a real browser: the overview, the dead letters filtered, one shown
// and replayed, delivered; a failed saga with its steps. A screenshot of
// each page goes to the test's artifact directory (go test -artifacts).
func TestInABrowser(t *testing.T) {
	exe := chromium(t)
	ctx := context.Background()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	require.NoError(t, fxsaga.Migrate(ctx, d.DB, d.Dialect, fxsaga.Tables{}))
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	delivered, err := gc.Subscribe(ctx, "orders")
	require.NoError(t, err)
	pub := &refusing{GoChannel: gc}
	bus, err := fxbus.New(fxbus.Config{Publisher: pub}, []fxbus.Routing{fxbus.NewRoute[Refused]("orders")}, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
		PollInterval: 20 * time.Millisecond, Undeliverable: func(err error) bool { return errors.Is(err, errRefused) },
	}}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()), fxcqrs.WithCommandHandlers(
		commandFunc[Refused](func(ctx context.Context, c Refused) error { fxcqrs.Emit(ctx, c); return nil })))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(ctx)) })
	require.NoError(t, o.Start(ctx))
	t.Cleanup(func() { require.NoError(t, o.Stop(ctx)) })
	require.NoError(t, fxcqrs.Exec(ctx, m, Refused{N: 1}))
	require.Eventually(t, func() bool { return o.Stats().DeadLettered == 1 }, time.Minute, 5*time.Millisecond)
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	require.NoError(t, store.Create(ctx, fxsaga.State{
		ID: "s-1", Name: "order", Status: fxsaga.Failed, Step: 1, Version: 2, Context: []byte(`{"id":1}`),
		Error: "step Ship: refused; compensating Charge: down", Shape: []byte(`{"name":"order","steps":[{"name":"Reserve"},{"name":"Charge"},{"name":"Ship"}]}`),
	}))

	console, err := fxconsole.New(o.Admin(), store, fxconsole.Config{
		Authorize: func(*http.Request) bool { return true }, Actions: true,
		Who: func(*http.Request) string { return "browser test" },
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/", http.StripPrefix("/ops", console))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()))
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	// A bound only a hang reaches: Chromium's first start on a busy,
	// cold machine has taken over 20s.
	browser, cancelTimeout := context.WithTimeout(browser, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(browser, steps...))
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, sel)
		return s
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(browser, chromedp.FullScreenshot(100)) // 100: a PNG, not a JPEG
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(t.ArtifactDir(), name+".png"), png, 0o644))
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	// until waits for a page, after a click that navigates, to satisfy
	// a predicate: a poll does not survive the navigation, so it is
	// started again on the new page.
	until := func(predicate string) {
		t.Helper()
		for {
			ok, err := chromedp.Run(browser, chromedp.Poll[bool](predicate))
			if err == nil && ok {
				return
			}
			require.NoError(t, browser.Err(), "waiting for %s", predicate)
		}
	}

	do(chromedp.Navigate(srv.URL + "/ops/"))
	assert.Contains(t, text("#dead"), "orders")
	shot("overview")
	do(chromedp.Click(css(`nav a[href$="dead"]`)))
	until(`document.querySelector("#filter") !== null`)
	do(chromedp.SendKeys(css(`#filter input[name="name"]`), "Refused"), chromedp.Submit(css("#filter")))
	until(`location.search.includes("name=Refused") && document.querySelector("#letters") !== null`)
	letters := text("#letters")
	assert.Contains(t, letters, "Refused")
	assert.Contains(t, letters, "message too large")
	shot("dead-letters")
	do(chromedp.Click(css("#letters a")))
	until(`document.querySelector("#payload") !== null`)
	assert.JSONEq(t, `{"N":1}`, text("#payload"))
	shot("dead-letter")
	pub.mended.Store(true)
	do(chromedp.SendKeys(css(`#replay input[name="why"]`), "the broker's limit was raised"), chromedp.Click(css("#replay button")))
	until(`document.querySelector("#notice") !== null`)
	assert.Equal(t, "replay: 1 of 1", strings.TrimSpace(text("#notice")))
	shot("replayed")
	select {
	case msg := <-delivered:
		msg.Ack()
		assert.JSONEq(t, `{"N":1}`, string(msg.Payload), "delivered after the replay")
	case <-time.After(time.Minute):
		t.Fatal("the replayed letter was never delivered")
	}
	do(chromedp.Navigate(srv.URL+"/ops/sagas?status=FAILED"), chromedp.Click(css("#saga-list a")))
	until(`document.querySelector("#steps") !== null`)
	assert.Equal(t, "Charge", strings.TrimSpace(text("#steps li.here")), "where it stopped: compensating Charge")
	shot("saga")
}
