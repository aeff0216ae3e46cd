package fxconsole

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// Tenants: the console shows every tenant's rows until a tenant is
// selected (the request's "tenant" parameter; present and empty: the
// default tenant). A selected tenant with a store of its own (WithTenants)
// is read and repaired through its store's Admin; any other, in the
// shared mode, through the outbox's Admin for that tenant alone
// (fxoutbox.Admin.ForTenant), so that a repair of a selected tenant
// touches none of another's rows. Every repair is recorded with the
// tenant of the letters it repaired.

// WithTenants gives the console the tenants with stores of their own:
// tenants lists them (the default tenant "" among them) and adminOf
// returns one's Admin, as fxoutbox.Outbox.Tenants and Outbox.AdminOf do
// (Module gives the graph's outbox's). Without it, the console knows the
// tenants the outbox's rows name.
func WithTenants(tenants func() []string, adminOf func(tenant string) (*fxoutbox.Admin, error)) Option {
	return func(c *Console) { c.tenants, c.adminOf = tenants, adminOf }
}

// tenantSel is the tenant a request selects: One false, every tenant.
type tenantSel struct {
	One    bool
	Tenant string
}

// selected returns the tenant r selects, by its URL's or its form's
// "tenant".
func selected(r *http.Request) tenantSel {
	if err := r.ParseForm(); err != nil || !r.Form.Has("tenant") {
		return tenantSel{}
	}
	return tenantSel{One: true, Tenant: r.Form.Get("tenant")}
}

// adminFor returns the Admin of what r selects: the outbox's (every
// tenant), a tenant store's, or the outbox's for one tenant alone. Nil
// when the console has no outbox.
func (c *Console) adminFor(r *http.Request) (*fxoutbox.Admin, error) {
	sel := selected(r)
	if c.admin == nil || !sel.One {
		return c.admin, nil
	}
	if c.adminOf != nil && sel.Tenant != "" && slices.Contains(c.tenants(), sel.Tenant) {
		return c.adminOf(sel.Tenant)
	}
	return c.admin.ForTenant(sel.Tenant), nil
}

// tenantChoice is one link of the tenant selector.
type tenantChoice struct {
	All    bool // every tenant
	Tenant string
	Label  string
	Here   bool
}

// tenantChoices is the tenant selector of a page that selects sel: none
// when there is one tenant alone, the default one (no store of another,
// no row of another).
func (c *Console) tenantChoices(ctx context.Context, sel tenantSel) ([]tenantChoice, error) {
	if c.admin == nil {
		return nil, nil
	}
	var known []string
	if c.tenants != nil {
		known = c.tenants()
	}
	seen, err := c.admin.Tenants(ctx)
	if err != nil {
		return nil, err
	}
	all := append(slices.Clone(known), seen...)
	slices.Sort(all)
	all = slices.Compact(all)
	if len(all) == 0 || len(all) == 1 && all[0] == "" {
		if !sel.One || sel.Tenant == "" {
			return nil, nil
		}
	}
	if sel.One && !slices.Contains(all, sel.Tenant) {
		all = append(all, sel.Tenant) // selected by hand: shown, with nothing
	}
	everyLabel := "every tenant"
	if len(c.storeTenants()) > 0 {
		everyLabel = "default store (every tenant's rows in it)"
	}
	out := []tenantChoice{{All: true, Label: everyLabel, Here: !sel.One}}
	for _, t := range all {
		label := t
		if t == "" {
			label = "(default)"
		}
		out = append(out, tenantChoice{Tenant: t, Label: label, Here: sel.One && sel.Tenant == t})
	}
	return out, nil
}

// storeTenants is the tenants with stores of their own (WithTenants), the
// default one left out: none in the shared mode.
func (c *Console) storeTenants() []string {
	if c.tenants == nil || c.adminOf == nil {
		return nil
	}
	return slices.DeleteFunc(slices.Clone(c.tenants()), func(t string) bool { return t == "" })
}

// storeSummary is one tenant store's line in the unselected view: what
// an operator looking at the default store needs to know is elsewhere.
type storeSummary struct {
	Tenant string
	Dead   int           // dead letters, the outbox's and the inbound ones, not discarded
	Lag    time.Duration // the relay's, in that store
	Err    string        // the store could not be read
}

// storeReads is how many tenant stores a page reads at once, and
// storeTimeout how long it waits for one: a store that does not answer
// (its database down, a table locked) is said so on its line, and does
// not hold the page for as long as the request lasts.
var (
	storeReads   = 8
	storeTimeout = 5 * time.Second
)

// storeSummaries is, with tenant stores and no tenant selected, a line
// per tenant store: the unselected view reads the default store alone,
// and says so, with each tenant's dead letters and lag linking to its
// own view. The stores are read storeReads at a time, each within
// storeTimeout. A store that cannot be read is shown so, not failing the
// page: the others are what the operator came for; so is one whose read
// panicked.
func (c *Console) storeSummaries(ctx context.Context, sel tenantSel) []storeSummary {
	if sel.One || c.admin == nil {
		return nil
	}
	tenants := c.storeTenants()
	out := make([]storeSummary, len(tenants))
	slots := make(chan struct{}, storeReads)
	var wg sync.WaitGroup
	for i, t := range tenants {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			// adminOf is the application's (WithTenants): its panic on
			// this goroutine would end the process, not the request, as
			// net/http recovers only the handler's own goroutine.
			defer func() {
				if p := recover(); p != nil {
					out[i] = storeSummary{Tenant: t, Err: fmt.Sprintf("panic: %v", p)}
				}
			}()
			out[i] = c.storeSummary(ctx, t)
		}()
	}
	wg.Wait()
	return out
}

// storeSummary reads tenant t's store's line, within storeTimeout.
func (c *Console) storeSummary(ctx context.Context, t string) storeSummary {
	s := storeSummary{Tenant: t}
	readCtx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	admin, err := c.adminOf(t)
	if err == nil {
		var dead []fxoutbox.TopicDeadLetters
		if dead, err = admin.DeadLetters(readCtx); err == nil {
			for _, d := range dead {
				s.Dead += d.Rows
			}
			s.Lag, err = admin.Lag(readCtx)
		}
	}
	switch {
	case err == nil:
	case ctx.Err() == nil && errors.Is(readCtx.Err(), context.DeadlineExceeded):
		s.Err = fmt.Sprintf("no answer within %s", storeTimeout)
	default:
		s.Err = err.Error()
	}
	return s
}
