package fxsaga

import (
	"context"
	"errors"
	"slices"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// Tenants. A saga keeps the tenant of the call that began it
// (State.Tenant) and runs every act, compensation, resume and deadline
// under it, whatever context drives it: the recovery loop's, which has
// none, or the awaited event's, which must be of the same tenant to
// resume it.
//
// Where each tenant's sagas live is the Tenancy's: with tenant stores, a
// saga lives in its tenant's store, beside the tenant's data; what the
// runner does outside a step's unit of work (creating the saga, saving it
// compensating or failed, recovery's claims and overdue scans) runs in a
// transaction on that store.

// Tenancy is where the sagas of each tenant live when tenants have stores
// of their own (a database, or a PostgreSQL schema, each): a
// *fxoutbox.Outbox is one, and Module gives the runner the graph's. A
// tenant's store is reached only through InTenant. The default tenant's
// ("") is the store's own database; so is that of a tenant Tenants does
// not list, unless the Tenancy is a StoresOnly that has tenant stores
// (the outbox with fxoutbox.Config.TenantStores), where such a tenant has
// no store the runner writes to. Without tenant stores (the shared
// mode) every tenant's sagas live in the store's one table, the tenant a
// column.
type Tenancy interface {
	// Tenants returns the ids of the tenants with stores now, the default
	// tenant ("") first: recovery walks each.
	Tenants() []string
	// InTenant runs fn in a transaction on tenant's store, with the
	// transaction (fxoutbox.Tx) and the tenant (fxbus.TenantOf) on fn's
	// context, and commits it when fn returns nil.
	InTenant(ctx context.Context, tenant string, fn func(ctx context.Context) error) error
}

// StoresOnly is a Tenancy that says whether every tenant but the
// default has a store of its own (*fxoutbox.Outbox: with
// fxoutbox.Config.TenantStores). When HasTenantStores is true, a tenant
// that Tenants does not list has no store the runner may write to: one
// that left the source (its store is drained) or one added to the source
// that the outbox has not read yet. Its sagas are never written to the
// store's own database in place of its store: what the runner does
// outside a step goes through InTenant, which refuses such a tenant with
// an error that wraps fxbus.ErrUnknownTenant, and the saga is left as it
// stands in its store (see docs/tenants.md). A Tenancy without the
// method keeps the shared mode's rule for a tenant it does not list: the
// store's own database.
type StoresOnly interface {
	Tenancy
	// HasTenantStores reports whether every tenant but the default has
	// a store of its own.
	HasTenantStores() bool
}

var (
	_ Tenancy    = (*fxoutbox.Outbox)(nil)
	_ StoresOnly = (*fxoutbox.Outbox)(nil)
)

// storeOf says whether tenant's sagas live in a store of its own, which
// r reaches through its Tenancy: every tenant's but the default's when
// the Tenancy says so (StoresOnly), else those it lists.
func (r *Runner) storeOf(tenant string) bool {
	if r.tenancy == nil || tenant == "" {
		return false
	}
	if only, ok := r.tenancy.(StoresOnly); ok && only.HasTenantStores() {
		return true
	}
	return slices.Contains(r.tenancy.Tenants(), tenant)
}

// storeless reports whether err is a refusal of tenant's store by the
// Tenancy while the tenant has none live (it left the source, or was not
// read yet): no failure of the saga's, which is left as it stands, for
// recovery once the store is served again.
func (r *Runner) storeless(tenant string, err error) bool {
	if !errors.Is(err, fxbus.ErrUnknownTenant) || !r.storeOf(tenant) {
		return false
	}
	return !slices.Contains(r.tenancy.Tenants(), tenant)
}

// within runs fn where the sagas of tenant live: in ctx's transaction
// when it has one (the unit of work of a step, an event or a deadline,
// already on the tenant's store), else in a transaction on the tenant's
// store when it has one of its own, else on the store's pool. fn's
// context works for tenant.
func (r *Runner) within(ctx context.Context, tenant string, fn func(ctx context.Context) error) error {
	ctx = fxbus.WithTenant(ctx, tenant)
	if fxoutbox.Tx(ctx) == nil && r.storeOf(tenant) {
		return r.tenancy.InTenant(ctx, tenant, fn)
	}
	return fn(ctx)
}

// stores are the tenants whose stores recovery walks: the default
// tenant's (the store's own database) first.
func (r *Runner) stores() []string {
	out := []string{""}
	if r.tenancy != nil {
		for _, t := range r.tenancy.Tenants() {
			if t != "" && !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}

// inStore runs fn on the store of tenant, as recovery finds sagas there:
// on the pool for the default tenant's, else in a transaction of the
// Tenancy's.
func (r *Runner) inStore(ctx context.Context, tenant string, fn func(ctx context.Context) error) error {
	if tenant == "" || r.tenancy == nil {
		return fn(ctx)
	}
	return r.tenancy.InTenant(ctx, tenant, fn)
}
