package fxconsole_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/fxcqrs/fxcqrs/fxconsole"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tenantLetter writes an outbox dead letter of tenant ("": the default
// tenant) into d.
func tenantLetter(t *testing.T, d outboxtest.Database, id int, tenant string) {
	t.Helper()
	meta := `{"name":"OrderPlaced"}`
	if tenant != "" {
		meta = fmt.Sprintf(`{"name":"OrderPlaced","tenant":%q}`, tenant)
	}
	_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		id, "orders", fmt.Sprintf("m-%d", id), []byte(fmt.Sprintf(`{"id":%d}`, id)), meta, "refused", time.Now().UnixNano()+int64(id))
	require.NoError(t, err)
}

// listed says whether a page of the dead letters links letter id.
func listed(page string, id int) bool {
	return regexp.MustCompile(fmt.Sprintf(`href="\./dead/%d[?"]`, id)).MatchString(page)
}

// noticeOf is the notice a repair's redirect carries.
func noticeOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	loc := rec.Header().Get("Location")
	_, query, _ := strings.Cut(loc, "?")
	q, err := url.ParseQuery(query)
	require.NoError(t, err, loc)
	return q.Get("notice")
}

// The console per tenant, in the shared mode: no selector while every
// row is the default tenant's; then one, and the lists, the letters and
// the repairs of the selected tenant alone (the default tenant apart from
// every tenant); a repair posted for one tenant skips another's letter,
// and each repair shows the tenant it was recorded with. With a tenant
// store (WithTenants), the selected tenant is read and repaired in its
// own store.
func TestTenants(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	c, err := fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true, Actions: true})
	require.NoError(t, err)
	tenantLetter(t, d, 3, "")
	_, page := get(t, c, "/dead")
	assert.NotContains(t, page, `id="tenants"`, "one tenant: no selector")

	tenantLetter(t, d, 1, "acme")
	tenantLetter(t, d, 2, "globex")
	_, page = get(t, c, "/dead")
	assert.Contains(t, page, `id="tenants"`)
	for _, id := range []int{1, 2, 3} {
		assert.True(t, listed(page, id), "every tenant's: %d", id)
	}
	_, page = get(t, c, "/dead?tenant=acme")
	assert.True(t, listed(page, 1))
	assert.False(t, listed(page, 2))
	assert.False(t, listed(page, 3))
	_, page = get(t, c, "/dead?tenant=")
	assert.True(t, listed(page, 3), "the default tenant's")
	assert.False(t, listed(page, 1), "the default tenant, not every tenant")
	code, _ := get(t, c, "/dead/2?tenant=acme")
	assert.Equal(t, http.StatusNotFound, code, "globex's letter, under acme")

	rec := post(t, c, "/dead/replay", url.Values{"id": {"1", "2"}, "why": {"back"}, "tenant": {"acme"}})
	assert.Equal(t, http.StatusSeeOther, rec.Code)
	assert.Contains(t, rec.Header().Get("Location"), "tenant=acme&", "back to the tenant's letters")
	assert.Equal(t, "replay: 1 of 2", noticeOf(t, rec), "globex's letter skipped")
	left, err := admin.ListDead(context.Background(), fxoutbox.DeadLetterFilter{})
	require.NoError(t, err)
	assert.Len(t, left, 2, "globex's and the default tenant's stay")
	repairs, err := admin.Repairs(context.Background(), 10)
	require.NoError(t, err)
	require.Len(t, repairs, 1)
	assert.Equal(t, "acme", repairs[0].Tenant)
	_, page = get(t, c, "/")
	assert.Regexp(t, `<td>replay</td><td class="tenant">acme</td>`, page)
	_, page = get(t, c, "/?tenant=globex")
	assert.NotContains(t, page, `<td>replay</td>`, "globex has no repair")

	// A tenant store: acme's letters live in acme's own database.
	store := outboxtest.Open(t, fxoutbox.SQLite)
	tenantLetter(t, store, 9, "acme")
	acme, err := fxoutbox.NewAdmin(store.DB, store.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	c, err = fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true, Actions: true},
		fxconsole.WithTenants(func() []string { return []string{"", "acme"} }, func(tenant string) (*fxoutbox.Admin, error) {
			require.Equal(t, "acme", tenant)
			return acme, nil
		}))
	require.NoError(t, err)
	_, page = get(t, c, "/dead?tenant=acme")
	assert.True(t, listed(page, 9), "acme's store")
	assert.False(t, listed(page, 1))
	rec = post(t, c, "/dead/discard", url.Values{"id": {"9"}, "why": {"a test"}, "tenant": {"acme"}})
	assert.Equal(t, "discard: 1 of 1", noticeOf(t, rec))
	storeRepairs, err := acme.Repairs(context.Background(), 10)
	require.NoError(t, err)
	require.Len(t, storeRepairs, 1, "recorded in acme's store")
	assert.Equal(t, "acme", storeRepairs[0].Tenant)
}

// In a real browser: the tenant selector picks acme, acme's letter is
// shown with its tenant and replayed, and the repair is recorded with
// acme's tenant, globex's letter untouched.
func TestTenantInABrowser(t *testing.T) {
	exe := chromium(t)
	d := outboxtest.Open(t, fxoutbox.SQLite)
	tenantLetter(t, d, 1, "acme")
	tenantLetter(t, d, 2, "globex")
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	console, err := fxconsole.New(admin, nil, fxconsole.Config{
		Authorize: func(*http.Request) bool { return true }, Actions: true,
		Who: func(*http.Request) string { return "browser test" },
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/", http.StripPrefix("/ops", console))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()))
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	browser, cancelTimeout := context.WithTimeout(browser, 3*time.Minute) // a bound only a hang reaches
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
	until := func(predicate string) { // see TestInABrowser
		t.Helper()
		for {
			ok, err := chromedp.Run(browser, chromedp.Poll[bool](predicate))
			if err == nil && ok {
				return
			}
			require.NoError(t, browser.Err(), "waiting for %s", predicate)
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(t.ArtifactDir(), name+".png"), png, 0o644))
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	do(chromedp.Navigate(srv.URL + "/ops/dead"))
	until(`document.querySelector("#tenants") !== null`)
	assert.Contains(t, text("#letters"), "globex", "every tenant's first")
	do(chromedp.Click(css(`#tenants a[data-tenant="acme"]`)))
	until(`location.search.includes("tenant=acme") && document.querySelector("#letters") !== null`)
	letters := text("#letters")
	assert.Contains(t, letters, "acme")
	assert.NotContains(t, letters, "globex")
	assert.Equal(t, "acme", strings.TrimSpace(text(`#tenants a[aria-current="page"]`)))
	shot("tenant-letters")
	do(chromedp.Click(css("#letters a")))
	until(`document.querySelector("#payload") !== null`)
	assert.Equal(t, "acme", strings.TrimSpace(text("#tenant")))
	do(chromedp.SendKeys(css(`#replay input[name="why"]`), "acme's broker is back"), chromedp.Click(css("#replay button")))
	until(`document.querySelector("#notice") !== null`)
	assert.Equal(t, "replay: 1 of 1", strings.TrimSpace(text("#notice")))
	until(`location.search.includes("tenant=acme")`)
	shot("tenant-replayed")
	do(chromedp.Click(css(`nav a:first-child`)))
	until(`document.querySelector("#repairs") !== null`)
	assert.Contains(t, text("#repairs td.tenant"), "acme")

	repairs, err := admin.Repairs(context.Background(), 10)
	require.NoError(t, err)
	require.Len(t, repairs, 1)
	assert.Equal(t, "acme", repairs[0].Tenant, "the repair's recorded tenant")
	assert.Equal(t, "browser test", repairs[0].Who)
	globex, err := admin.ForTenant("globex").ListDead(context.Background(), fxoutbox.DeadLetterFilter{})
	require.NoError(t, err)
	assert.Len(t, globex, 1, "globex's letter untouched")
	assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE message_id = 'm-1' AND msg_tenant = 'acme'"), "replayed with its tenant")
}

// With tenant stores and no tenant selected, the overview and the dead
// letters show the default store alone and say so, with a line per
// tenant store: its dead letters and its lag, linking to its own view; a
// store that cannot be read says so on its line, the page still served.
// A selected tenant's view, and the shared mode, have no such lines.
func TestTenantStoresBesideTheDefaultStore(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	tenantLetter(t, d, 1, "")
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)

	acmeStore := outboxtest.Open(t, fxoutbox.SQLite)
	tenantLetter(t, acmeStore, 7, "acme")
	tenantLetter(t, acmeStore, 8, "acme")
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	_, err = acmeStore.DB.Exec("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata, created_ns, due_ns) VALUES ('orders', 'w-1', '{}', '{}', ?, ?)",
		t0.UnixNano(), t0.UnixNano())
	require.NoError(t, err)
	acme, err := fxoutbox.NewAdmin(acmeStore.DB, acmeStore.Dialect, fxoutbox.Tables{}, func() time.Time { return t0.Add(90 * time.Second) })
	require.NoError(t, err)
	unmigrated := outboxtest.OpenEmpty(t, fxoutbox.SQLite)
	globex, err := fxoutbox.NewAdmin(unmigrated.DB, unmigrated.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	stores := map[string]*fxoutbox.Admin{"acme": acme, "globex": globex}
	withStores := fxconsole.WithTenants(func() []string { return []string{"", "acme", "globex"} }, func(tenant string) (*fxoutbox.Admin, error) {
		return stores[tenant], nil
	})
	c, err := fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true}, withStores)
	require.NoError(t, err)

	for _, path := range []string{"/", "/dead"} {
		code, page := get(t, c, path)
		assert.Equal(t, http.StatusOK, code, path)
		assert.Contains(t, page, `id="default-store"`, path)
		assert.Contains(t, page, "shows the <b>default store</b>", path)
		assert.Contains(t, page, `<tr data-tenant="acme"><td><a href="?tenant=acme">acme</a></td><td>2</td><td>1m30s</td></tr>`, path)
		assert.Regexp(t, `<tr data-tenant="globex"><td><a href="\?tenant=globex">globex</a></td><td colspan="2" class="error">cannot read its store: `, page, path)
		assert.Contains(t, page, `data-tenant="*">default store (every tenant&#39;s rows in it)</a>`, path)
	}
	_, page := get(t, c, "/dead")
	assert.True(t, listed(page, 1), "the default store's letter")
	assert.False(t, listed(page, 7), "acme's, in its own store")
	_, page = get(t, c, "/dead?tenant=acme")
	assert.True(t, listed(page, 7))
	assert.NotContains(t, page, `id="stores"`, "a tenant selected")
	_, page = get(t, c, "/sagas")
	assert.NotContains(t, page, `id="stores"`, "not a page of the outbox's stores")

	shared, err := fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true})
	require.NoError(t, err)
	_, page = get(t, shared, "/")
	assert.NotContains(t, page, `id="stores"`, "the shared mode: one store")
}

// getWithin is get with a request that ends after d: a page that waits on
// a store for as long as the request lasts fails rather than hangs.
func getWithin(t *testing.T, h http.Handler, path string, d time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

// A tenant store that does not answer (a PostgreSQL database whose table
// of dead letters an open transaction locks ACCESS EXCLUSIVE) says so on
// its line once the store's timeout passed, and the page is served with
// the other stores' lines: it is not held for as long as the request.
func TestTenantStoreThatDoesNotAnswer(t *testing.T) {
	fxconsole.SetStoreTimeout(t, 200*time.Millisecond)
	d := outboxtest.Open(t, fxoutbox.SQLite)
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	acmeStore := outboxtest.Open(t, fxoutbox.SQLite)
	tenantLetter(t, acmeStore, 7, "acme")
	acme, err := fxoutbox.NewAdmin(acmeStore.DB, acmeStore.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	hungStore := outboxtest.Open(t, fxoutbox.PostgreSQL)
	hung, err := fxoutbox.NewAdmin(hungStore.DB, hungStore.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	lock, err := hungStore.DB.Begin()
	require.NoError(t, err)
	t.Cleanup(func() { _ = lock.Rollback() })
	_, err = lock.Exec("LOCK TABLE fxcqrs_outbox_dead IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)

	stores := map[string]*fxoutbox.Admin{"acme": acme, "globex": hung}
	withStores := fxconsole.WithTenants(func() []string { return []string{"", "acme", "globex"} }, func(tenant string) (*fxoutbox.Admin, error) {
		return stores[tenant], nil
	})
	c, err := fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true}, withStores)
	require.NoError(t, err)
	page := getWithin(t, c, "/", 15*time.Second)
	assert.Contains(t, page, `<tr data-tenant="acme"><td><a href="?tenant=acme">acme</a></td><td>1</td>`)
	assert.Contains(t, page, `<tr data-tenant="globex"><td><a href="?tenant=globex">globex</a></td><td colspan="2" class="error">cannot read its store: no answer within 200ms</td></tr>`)
}

// The tenant stores are read at once, not one after another: each
// store's Admin is asked for only once the other's was too, which reads
// one after another never do (the wait then gives up, and the lines say
// so).
func TestTenantStoresReadTogether(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	var arrived sync.WaitGroup
	arrived.Add(2)
	both := make(chan struct{})
	go func() { arrived.Wait(); close(both) }()
	withStores := fxconsole.WithTenants(func() []string { return []string{"", "acme", "globex"} }, func(tenant string) (*fxoutbox.Admin, error) {
		arrived.Done()
		select {
		case <-both:
			return admin.ForTenant(tenant), nil
		case <-time.After(10 * time.Second):
			return nil, errors.New("the other store was not read meanwhile")
		}
	})
	c, err := fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true}, withStores)
	require.NoError(t, err)
	_, page := get(t, c, "/")
	for _, tenant := range []string{"acme", "globex"} {
		assert.Contains(t, page, fmt.Sprintf(`<tr data-tenant="%s"><td><a href="?tenant=%s">%s</a></td><td>0</td>`, tenant, tenant, tenant))
	}
}

// A store whose read panics (the application's adminOf, given to
// WithTenants) says so on its line: the panic, on a goroutine of the
// page's, would otherwise end the process.
func TestTenantStoreWhoseReadPanics(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	withStores := fxconsole.WithTenants(func() []string { return []string{"", "acme", "globex"} }, func(tenant string) (*fxoutbox.Admin, error) {
		if tenant == "globex" {
			panic("globex's store is not configured")
		}
		return admin.ForTenant(tenant), nil
	})
	c, err := fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true}, withStores)
	require.NoError(t, err)
	_, page := get(t, c, "/")
	assert.Contains(t, page, `<tr data-tenant="acme"><td><a href="?tenant=acme">acme</a></td><td>0</td>`)
	assert.Contains(t, page, `<tr data-tenant="globex"><td><a href="?tenant=globex">globex</a></td><td colspan="2" class="error">cannot read its store: panic: globex&#39;s store is not configured</td></tr>`)
}
