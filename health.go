package fxcqrs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/fx"
)

// Check is one health check of a module: the outbox's database and
// relay, the bus's broker, the sagas' recovery. The modules provide
// theirs under fx (see [AsCheck]); [Health] runs them for an
// orchestrator's probes or a load balancer. A Check's Run is a
// func(context.Context) error, which the Go ecosystem's health checkers
// take as they are.
type Check struct {
	// Name names the check in reports: "fxoutbox.relay".
	Name string
	// Readiness marks a check whose failure means "send this replica no
	// traffic" rather than "restart it": a relay behind, a broker away. A
	// liveness check (false) fails only when the process cannot work at
	// all, for a restart cannot mend a poison message or a broker that
	// is down.
	Readiness bool
	// Run returns nil when healthy, else what is wrong. It must honour
	// ctx's deadline.
	Run func(ctx context.Context) error
}

const checksGroup = `group:"fxcqrs.checks"`

// AsCheck registers a constructor of a Check with fx, for [HealthModule]
// to run.
func AsCheck(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.ResultTags(checksGroup)))
}

// AsChecks registers a constructor of a []Check with fx: a module's
// checks at once.
func AsChecks(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.ResultTags(`group:"fxcqrs.checks,flatten"`)))
}

// HealthModule provides the *[Health] of every Check registered with
// [AsCheck] (the modules register theirs).
var HealthModule = fx.Module("fxcqrs.health", fx.Provide(provideHealth))

type healthParams struct {
	fx.In

	Checks []Check `group:"fxcqrs.checks"`
}

func provideHealth(p healthParams) *Health { return NewHealth(p.Checks...) }

// Health runs checks: [Health.Live] the liveness ones, [Health.Ready]
// every one, each at most Timeout (default 5s), in parallel.
type Health struct {
	checks []Check
	// Timeout bounds each check. Set it before the first run.
	Timeout time.Duration
}

// NewHealth returns the Health of checks, by name.
func NewHealth(checks ...Check) *Health {
	checks = slices.Clone(checks)
	slices.SortFunc(checks, func(a, b Check) int { return strings.Compare(a.Name, b.Name) })
	return &Health{checks: checks, Timeout: 5 * time.Second}
}

// CheckError is the error of a check that failed.
type CheckError struct {
	Name string
	Err  error
}

// Error names the check and says why it failed.
func (e *CheckError) Error() string { return e.Name + ": " + e.Err.Error() }

// Unwrap returns the check's error.
func (e *CheckError) Unwrap() error { return e.Err }

// Live runs the liveness checks and joins the failures' *CheckErrors.
func (h *Health) Live(ctx context.Context) error { return h.run(ctx, false) }

// Ready runs every check and joins the failures' *CheckErrors.
func (h *Health) Ready(ctx context.Context) error { return h.run(ctx, true) }

func (h *Health) run(ctx context.Context, readiness bool) error {
	errs := make([]error, len(h.checks))
	var wg sync.WaitGroup
	for i, c := range h.checks {
		if c.Readiness && !readiness {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, h.Timeout)
			defer cancel()
			if err := runCheck(ctx, c); err != nil {
				errs[i] = &CheckError{Name: c.Name, Err: err}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// runCheck runs c, a panic included.
func runCheck(ctx context.Context, c Check) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panicked: %v", v)
		}
	}()
	return c.Run(ctx)
}

// Handler serves the probes: GET /healthz runs the liveness checks, GET
// /readyz every one; each answers 200 when they pass and 503 when one
// fails, with a JSON body naming each failing check and why:
// {"status":"unavailable","failing":{"fxoutbox.relay":"lag 2m0s, over 1m0s"}}.
// Mount it where the probes look: mux.Handle("/healthz", h.Handler()),
// mux.Handle("/readyz", h.Handler()); any path ending otherwise is
// /readyz's.
func (h *Health) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var err error
		if strings.HasSuffix(r.URL.Path, "/healthz") {
			err = h.Live(r.Context())
		} else {
			err = h.Ready(r.Context())
		}
		body := struct {
			Status  string            `json:"status"`
			Failing map[string]string `json:"failing,omitempty"`
		}{Status: "ok"}
		code := http.StatusOK
		if err != nil {
			code, body.Status, body.Failing = http.StatusServiceUnavailable, "unavailable", map[string]string{}
			for _, e := range flatten(err) {
				var ce *CheckError
				if errors.As(e, &ce) {
					body.Failing[ce.Name] = ce.Err.Error()
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok { // errors.Join's
		return j.Unwrap()
	}
	return []error{err}
}
