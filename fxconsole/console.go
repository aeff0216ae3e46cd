// Package fxconsole is a web console for what fxcqrs's durable path
// holds: an http.Handler a service mounts, server-rendered, with no
// listener, no build step, no script and no external asset of its own.
// It shows the outbox's backlog and lag, the dead letters (filtered,
// shown, replayed or discarded) and the sagas (by name and status, one
// with its log and the step it stopped at), on the repair API of the
// outbox (fxoutbox.Admin) and of the saga store (fxsaga.SQL).
//
//	mux.Handle("/ops/", http.StripPrefix("/ops", console))
//
// It cannot know who calls it, so it takes an authorization function
// (Config.Authorize) and refuses every request it refuses; only
// Config.InsecureAllowEveryone, for a developer's own machine, turns that
// off. It runs read-only unless Config.Actions is set; a state-changing
// request from another origin is refused (net/http's
// CrossOriginProtection); every value it shows, a dead letter's payload
// first, is escaped by html/template.
//
// # Is something wrong?
//
// The overview opens on the answer: the health checks' state (WithChecks;
// under fx, the checks the modules register), the worst lag, the
// backlogs that grew over the last five minutes, and the newest dead
// letters. Then its charts.
//
// # Charts
//
// Once started (Console.Start; under fx, the lifecycle does it) the
// console samples, every Config.SampleEvery (15s), each topic's backlog
// and lag, the dead letters and the keys they park, the sagas waiting and
// failed, and, when it has the counters (WithOutboxStats, WithBusStats;
// under fx, the graph's outbox and bus), the rows relayed and the
// messages handled. It keeps Config.Samples of them (480: two hours) in
// memory, per replica, and draws them as inline SVG: the overview's
// charts, and a topic's (/topic?name=...), with their axes, units, the
// current values, and a mark where a repair happened (the outbox's
// recorded replays and discards, and the saga marks this console made).
// Each chart has its text alternative (a title, a description, a table
// of the newest values) and scales to a phone's width. The pages say how
// old the newest sample is. The samples start when the console does:
// there is no history from before, nor from another replica.
//
// # Tenants
//
// Once the dead letters or schedules name a second tenant, or the outbox
// has tenant stores (WithTenants; under fx, the graph's outbox's), every
// page shows a tenant selector, and every letter and repair its tenant. A selected
// tenant's pages and repairs are that tenant's alone: a replay posted for
// one tenant skips another's letters; each repair is recorded with the
// tenant of what it repaired. The charts stay every tenant's. With tenant
// stores, the view with no tenant selected reads the default store (the
// outbox's own database) alone: the overview and the dead letters say so,
// and list each tenant store with its dead letters and its lag, linking
// to its own view.
//
// # Sagas drawn
//
// A saga's page draws it from the shape it was started with
// (fxsaga.State.Shape): the steps down, the waits with their deadline,
// the compensations up, the steps done and the one where it stands
// marked; beside it the Mermaid source. A list of one saga's name draws
// its definition.
package fxconsole

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"go.uber.org/fx"
)

//go:embed templates/*.html
var templates embed.FS

// Config configures the console.
type Config struct {
	// Authorize says whether r may see the console (and act, when
	// Actions is set): a session, a header set by the service's auth
	// proxy. Required, unless InsecureAllowEveryone.
	Authorize func(r *http.Request) bool
	// InsecureAllowEveryone lets every caller in, without Authorize: for
	// a developer's own machine only, never a served one.
	InsecureAllowEveryone bool
	// Actions enables the repairs: replaying and discarding dead
	// letters, marking sagas. Default off: the console only reads.
	Actions bool
	// Who names the caller in the repair records. Default: "console".
	Who func(r *http.Request) string

	// SampleEvery is how often the console samples what its charts draw
	// (see Console.Start). Default DefaultSampleEvery (15s).
	SampleEvery time.Duration
	// Samples is how many samples it keeps, the oldest dropped first.
	// Default DefaultSamples: two hours at the default interval.
	Samples int
	// Now is the console's clock, by which samples are taken and their
	// age said: the outbox's, for the ages to agree. Default time.Now.
	Now func() time.Time
	// After waits for the next sample, as time.After does (the default):
	// a test's fake clock drives the sampling loop through it.
	After func(time.Duration) <-chan time.Time
}

// Console is the console's handler. Make one with New.
type Console struct {
	admin *fxoutbox.Admin
	sagas *fxsaga.SQL
	cfg   Config
	pages *template.Template
	mux   *http.ServeMux
	h     http.Handler // serve, behind the cross-origin protection

	outboxStats func() fxoutbox.Stats
	busStats    func() fxbus.Stats
	checks      []fxcqrs.Check

	ring       ring
	loop       sync.Mutex // guards stop and done
	stop, done chan struct{}
	marksMu    sync.Mutex
	marks      []repairMark // the saga marks this console made

	tenants func() []string                              // see WithTenants; nil: the shared mode alone
	adminOf func(tenant string) (*fxoutbox.Admin, error) // see WithTenants
}

// New returns the console of admin's outbox and sagas' store (either may
// be nil: its pages say so), with the sources opts add (the outbox's and
// the bus's counters, the health checks). It refuses a Config without
// Authorize and without InsecureAllowEveryone. Its charts draw the
// samples it takes once started (Start).
func New(admin *fxoutbox.Admin, sagas *fxsaga.SQL, cfg Config, opts ...Option) (*Console, error) {
	if cfg.Authorize == nil && !cfg.InsecureAllowEveryone {
		return nil, errors.New("fxconsole.New: Config.Authorize is required: the console cannot know who calls it (set InsecureAllowEveryone on a developer's machine only)")
	}
	if cfg.Who == nil {
		cfg.Who = func(*http.Request) string { return "console" }
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = DefaultSampleEvery
	}
	if cfg.Samples <= 0 {
		cfg.Samples = DefaultSamples
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	pages, err := template.New("").Funcs(template.FuncMap{
		"time": func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return t.UTC().Format(time.RFC3339)
		},
		"dur":     func(d time.Duration) string { return d.Round(time.Millisecond).String() },
		"ago":     func(d time.Duration) string { return d.Round(time.Second).String() },
		"payload": shownPayload, // payload.go
	}).ParseFS(templates, "templates/*.html")
	if err != nil {
		return nil, err
	}
	c := &Console{admin: admin, sagas: sagas, cfg: cfg, pages: pages, mux: http.NewServeMux(), ring: ring{buf: make([]Sample, cfg.Samples)}}
	for _, o := range opts {
		o(c)
	}
	c.mux.HandleFunc("GET /{$}", c.overview)
	c.mux.HandleFunc("GET /topic", c.topic)
	c.mux.HandleFunc("GET /dead", c.deadList)
	c.mux.HandleFunc("GET /dead/{id}", c.deadShow)
	c.mux.HandleFunc("POST /dead/{action}", c.deadRepair)
	c.mux.HandleFunc("GET /sagas", c.sagaList)
	c.mux.HandleFunc("GET /sagas/{id}", c.sagaShow)
	c.mux.HandleFunc("POST /sagas/{id}/{action}", c.sagaMark)
	c.h = http.NewCrossOriginProtection().Handler(http.HandlerFunc(c.serve))
	return c, nil
}

// ServeHTTP refuses a state-changing request from another origin, then
// authorizes the request, then serves it.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.h.ServeHTTP(w, r) }

func (c *Console) serve(w http.ResponseWriter, r *http.Request) {
	if !c.cfg.InsecureAllowEveryone && !c.cfg.Authorize(r) {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost && !c.cfg.Actions {
		http.Error(w, "the console is read-only: Config.Actions is off", http.StatusForbidden)
		return
	}
	c.mux.ServeHTTP(w, r)
}

// page is what every template gets.
type page struct {
	Base    string // the console's root, relative to the page: "./", "../"
	Title   string
	Actions bool
	Error   string
	Notice  string
	Data    any
	// Sel is the tenant the page shows (Sel.One false: every tenant's),
	// and Tenants the selector's choices (none: one tenant alone).
	Sel     tenantSel
	Tenants []tenantChoice
	// Stores is, on the overview and the dead letters with tenant stores
	// and no tenant selected, each tenant store's summary: those pages
	// show the default store alone.
	Stores []storeSummary
}

// storeViews is the pages whose unselected view is the default store's
// alone, and lists the tenants' stores beside it.
var storeViews = map[string]bool{"overview.html": true, "dead.html": true}

func (c *Console) render(w http.ResponseWriter, r *http.Request, name, title string, data any, err error) {
	p := page{Base: relative(r, "/"), Title: title, Actions: c.cfg.Actions, Data: data, Notice: r.URL.Query().Get("notice"), Sel: selected(r)}
	if p.Base == "" {
		p.Base = "./"
	}
	var terr error
	if p.Tenants, terr = c.tenantChoices(r.Context(), p.Sel); terr != nil {
		err = errors.Join(err, terr)
	}
	if storeViews[name] {
		p.Stores = c.storeSummaries(r.Context(), p.Sel)
	}
	code := http.StatusOK
	if err != nil {
		p.Error, code = err.Error(), http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := c.pages.ExecuteTemplate(w, name, p); err != nil {
		fmt.Fprintf(w, "<p>template: %s</p>", template.HTMLEscapeString(err.Error()))
	}
}

// redirect sends the browser back to path with a notice (303: GET), and
// the tenant the request selected. The Location is relative, set by hand:
// http.Redirect would resolve it against the path the handler sees, which
// lacks the prefix the console is mounted under.
func redirect(w http.ResponseWriter, r *http.Request, path, notice string) {
	tenant := ""
	if sel := selected(r); sel.One {
		tenant = "tenant=" + urlQuery(sel.Tenant) + "&"
	}
	w.Header().Set("Location", relative(r, path)+"?"+tenant+"notice="+urlQuery(notice))
	w.WriteHeader(http.StatusSeeOther)
}

// relative is path as seen from the request's own URL, so that the
// console works under any prefix it is mounted at.
func relative(r *http.Request, path string) string {
	depth := strings.Count(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return strings.Repeat("../", depth) + strings.TrimPrefix(path, "/")
}

func urlQuery(s string) string { return template.URLQueryEscaper(s) }

type overviewData struct {
	// What answers "is something wrong?", first.
	Checks     []checkState
	ChecksFail int
	WorstLag   TopicSample
	LagBad     bool // the worst lag is a minute or more
	Growing    []growth
	NewestDead []fxoutbox.DeadLetter
	Freshness  freshness
	Charts     []chart

	Backlog   []fxoutbox.TopicBacklog
	Dead      []fxoutbox.TopicDeadLetters
	Scheduled fxoutbox.ScheduledSummary
	Leases    []fxoutbox.Lease
	Sagas     []fxsaga.Count
	Repairs   []fxoutbox.Repair
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	var d overviewData
	var errs []error
	d.Checks = c.runChecks(r.Context())
	for _, ch := range d.Checks {
		if ch.Err != "" {
			d.ChecksFail++
		}
	}
	samples := c.ring.all()
	marks, err := c.repairMarks(r.Context())
	errs = append(errs, err)
	d.Charts, d.Growing, d.Freshness = overviewCharts(samples, marks), growing(samples), c.freshness(samples)
	admin, err := c.adminFor(r)
	errs = append(errs, err)
	if admin != nil {
		var err error
		d.Backlog, err = admin.Backlog(r.Context())
		errs = append(errs, err)
		for _, b := range d.Backlog {
			if b.Lag > d.WorstLag.Lag {
				d.WorstLag = TopicSample{Topic: b.Topic, Rows: b.Rows, Due: b.Due, Lag: b.Lag}
			}
		}
		d.LagBad = d.WorstLag.Lag >= time.Minute
		d.NewestDead, err = admin.ListDead(r.Context(), fxoutbox.DeadLetterFilter{NewestFirst: true, Limit: 5})
		errs = append(errs, err)
		d.Dead, err = admin.DeadLetters(r.Context())
		errs = append(errs, err)
		d.Scheduled, err = admin.Scheduled(r.Context())
		errs = append(errs, err)
		d.Leases, err = c.admin.Leases(r.Context())
		errs = append(errs, err)
		d.Repairs, err = admin.Repairs(r.Context(), 10)
		errs = append(errs, err)
	}
	if c.sagas != nil {
		var err error
		d.Sagas, err = c.sagas.Counts(r.Context())
		errs = append(errs, err)
	}
	c.render(w, r, "overview.html", "Overview", d, errors.Join(errs...))
}

// Module provides the *Console of the graph's outbox (*fxoutbox.Outbox:
// its Admin and its counters), bus (*fxbus.Bus: its counters), saga
// store (an *fxsaga.SQL as its fxsaga.Store) and health checks (those
// registered with fxcqrs.AsCheck), each optional, with the graph's
// Config, which is required (its Authorize is); the fx lifecycle starts
// and stops its sampling. Mount it:
//
//	fx.Invoke(func(mux *http.ServeMux, c *fxconsole.Console) { mux.Handle("/ops/", http.StripPrefix("/ops", c)) })
var Module = fx.Module("fxconsole", fx.Provide(provide))

type params struct {
	fx.In

	Lifecycle fx.Lifecycle
	Config    Config
	Outbox    *fxoutbox.Outbox `optional:"true"`
	Bus       *fxbus.Bus       `optional:"true"`
	Store     fxsaga.Store     `optional:"true"`
	Checks    []fxcqrs.Check   `group:"fxcqrs.checks"`
}

func provide(p params) (*Console, error) {
	var admin *fxoutbox.Admin
	var opts []Option
	if p.Outbox != nil {
		admin = p.Outbox.Admin()
		opts = append(opts, WithOutboxStats(p.Outbox.Stats), WithTenants(p.Outbox.Tenants, p.Outbox.AdminOf))
	}
	if p.Bus != nil {
		opts = append(opts, WithBusStats(p.Bus.Stats))
	}
	opts = append(opts, WithChecks(p.Checks...))
	sagas, _ := p.Store.(*fxsaga.SQL)
	c, err := New(admin, sagas, p.Config, opts...)
	if err != nil {
		return nil, err
	}
	p.Lifecycle.Append(fx.StartStopHook(c.Start, c.Stop))
	return c, nil
}
