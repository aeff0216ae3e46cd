// Package fxconsole is a web console for what fxcqrs's durable path
// holds: an http.Handler a service mounts, server-rendered, with no
// listener, no build step and no external asset of its own. It shows the
// outbox's backlog and lag, the dead letters (filtered, shown, replayed
// or discarded) and the sagas (by name and status, one with its log and
// the step it stopped at), on the repair API of the outbox
// (fxoutbox.Admin) and of the saga store (fxsaga.SQL).
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
package fxconsole

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	fxsaga "github.com/fxcqrs/fxcqrs/saga"
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
}

// Console is the console's handler. Make one with New.
type Console struct {
	admin *fxoutbox.Admin
	sagas *fxsaga.SQL
	cfg   Config
	pages *template.Template
	mux   *http.ServeMux
	h     http.Handler // serve, behind the cross-origin protection
}

// New returns the console of admin's outbox and sagas' store (either may
// be nil: its pages say so). It refuses a Config without Authorize and
// without InsecureAllowEveryone.
func New(admin *fxoutbox.Admin, sagas *fxsaga.SQL, cfg Config) (*Console, error) {
	if cfg.Authorize == nil && !cfg.InsecureAllowEveryone {
		return nil, errors.New("fxconsole.New: Config.Authorize is required: the console cannot know who calls it (set InsecureAllowEveryone on a developer's machine only)")
	}
	if cfg.Who == nil {
		cfg.Who = func(*http.Request) string { return "console" }
	}
	pages, err := template.New("").Funcs(template.FuncMap{
		"time": func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return t.UTC().Format(time.RFC3339)
		},
		"dur": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	}).ParseFS(templates, "templates/*.html")
	if err != nil {
		return nil, err
	}
	c := &Console{admin: admin, sagas: sagas, cfg: cfg, pages: pages, mux: http.NewServeMux()}
	c.mux.HandleFunc("GET /{$}", c.overview)
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
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, name, title string, data any, err error) {
	p := page{Base: relative(r, "/"), Title: title, Actions: c.cfg.Actions, Data: data, Notice: r.URL.Query().Get("notice")}
	if p.Base == "" {
		p.Base = "./"
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

// redirect sends the browser back to path with a notice (303: GET).
// The Location is relative, set by hand: http.Redirect would resolve it
// against the path the handler sees, which lacks the prefix the console
// is mounted under.
func redirect(w http.ResponseWriter, r *http.Request, path, notice string) {
	w.Header().Set("Location", relative(r, path)+"?notice="+urlQuery(notice))
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
	if c.admin != nil {
		var err error
		d.Backlog, err = c.admin.Backlog(r.Context())
		errs = append(errs, err)
		d.Dead, err = c.admin.DeadLetters(r.Context())
		errs = append(errs, err)
		d.Scheduled, err = c.admin.Scheduled(r.Context())
		errs = append(errs, err)
		d.Leases, err = c.admin.Leases(r.Context())
		errs = append(errs, err)
		d.Repairs, err = c.admin.Repairs(r.Context(), 10)
		errs = append(errs, err)
	}
	if c.sagas != nil {
		var err error
		d.Sagas, err = c.sagas.Counts(r.Context())
		errs = append(errs, err)
	}
	c.render(w, r, "overview.html", "Overview", d, errors.Join(errs...))
}

type deadListData struct {
	Filter  fxoutbox.DeadLetterFilter
	Letters []fxoutbox.DeadLetter
}

func (c *Console) deadList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := fxoutbox.DeadLetterFilter{Topic: q.Get("topic"), Name: q.Get("name"), ErrorContains: q.Get("error"), Discarded: q.Get("discarded") == "on", Limit: 200}
	var d deadListData
	d.Filter = f
	var err error
	if c.admin == nil {
		err = errors.New("no outbox")
	} else {
		d.Letters, err = c.admin.ListDead(r.Context(), f)
	}
	c.render(w, r, "dead.html", "Dead letters", d, err)
}

func (c *Console) deadShow(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || c.admin == nil {
		http.NotFound(w, r)
		return
	}
	letter, err := c.admin.Dead(r.Context(), id)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	c.render(w, r, "letter.html", "Dead letter "+strconv.FormatInt(id, 10), letter, nil)
}

func (c *Console) deadRepair(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if (action != "replay" && action != "discard") || c.admin == nil {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ids []int64
	for _, s := range r.PostForm["id"] {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		ids = append(ids, id)
	}
	do := c.admin.Replay
	if action == "discard" {
		do = c.admin.Discard
	}
	n, err := do(r.Context(), ids, c.cfg.Who(r), r.PostForm.Get("why"))
	if err != nil {
		redirect(w, r, "/dead", action+" failed: "+err.Error())
		return
	}
	redirect(w, r, "/dead", fmt.Sprintf("%s: %d of %d", action, n, len(ids)))
}

type sagaListData struct {
	Name, Status string
	Counts       []fxsaga.Count
	Sagas        []fxsaga.State
}

func (c *Console) sagaList(w http.ResponseWriter, r *http.Request) {
	if c.sagas == nil {
		c.render(w, r, "sagas.html", "Sagas", sagaListData{}, errors.New("no saga store"))
		return
	}
	d := sagaListData{Name: r.URL.Query().Get("name"), Status: strings.ToUpper(r.URL.Query().Get("status"))}
	var err error
	if d.Name == "" && d.Status == "" {
		d.Counts, err = c.sagas.Counts(r.Context())
	} else {
		d.Sagas, err = c.sagas.List(r.Context(), d.Name, fxsaga.Status(d.Status), 200)
	}
	c.render(w, r, "sagas.html", "Sagas", d, err)
}

type sagaData struct {
	State   fxsaga.State
	Log     []fxsaga.Entry
	Steps   []stepRow
	Mermaid string
}

type stepRow struct {
	Index int
	fxsaga.ShapeStep
	Here bool
}

func (c *Console) sagaShow(w http.ResponseWriter, r *http.Request) {
	if c.sagas == nil {
		http.NotFound(w, r)
		return
	}
	st, err := c.sagas.Load(r.Context(), r.PathValue("id"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	d := sagaData{State: st}
	d.Log, err = c.sagas.Entries(r.Context(), st.ID)
	if sh, ok := fxsaga.ShapeOf(st); ok {
		d.Mermaid = sh.MermaidAt(st)
		for i, s := range sh.Steps {
			d.Steps = append(d.Steps, stepRow{Index: i, ShapeStep: s, Here: i == st.Step && !st.Status.Final() || i == st.Step && st.Status == fxsaga.Failed})
		}
	}
	c.render(w, r, "saga.html", "Saga "+st.ID, d, err)
}

func (c *Console) sagaMark(w http.ResponseWriter, r *http.Request) {
	if c.sagas == nil {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, why, who := r.PathValue("id"), r.PostForm.Get("why"), c.cfg.Who(r)
	var err error
	switch r.PathValue("action") {
	case "retry":
		_, err = c.sagas.Retry(r.Context(), id, who, why)
	case "resolve":
		_, err = c.sagas.Resolve(r.Context(), id, who, why)
	case "compensate":
		step, perr := strconv.Atoi(r.PostForm.Get("from"))
		if perr != nil {
			err = errors.New("from: a step's index")
		} else {
			_, err = c.sagas.CompensateFrom(r.Context(), id, step, who, why)
		}
	default:
		http.NotFound(w, r)
		return
	}
	notice := r.PathValue("action") + ": marked; the service's recovery acts on its next pass"
	if err != nil {
		notice = r.PathValue("action") + " failed: " + err.Error()
	}
	redirect(w, r, "/sagas/"+id, notice)
}

// Module provides the *Console of the graph's outbox (*fxoutbox.Outbox)
// and saga store (an *fxsaga.SQL as its fxsaga.Store), each optional, with
// the graph's Config, which is required (its Authorize is). Mount it:
//
//	fx.Invoke(func(mux *http.ServeMux, c *fxconsole.Console) { mux.Handle("/ops/", http.StripPrefix("/ops", c)) })
var Module = fx.Module("fxconsole", fx.Provide(provide))

type params struct {
	fx.In

	Config Config
	Outbox *fxoutbox.Outbox `optional:"true"`
	Store  fxsaga.Store     `optional:"true"`
}

func provide(p params) (*Console, error) {
	var admin *fxoutbox.Admin
	if p.Outbox != nil {
		admin = p.Outbox.Admin()
	}
	sagas, _ := p.Store.(*fxsaga.SQL)
	return New(admin, sagas, p.Config)
}
