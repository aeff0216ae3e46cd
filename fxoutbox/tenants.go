package fxoutbox

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"go.uber.org/fx"
)

// Tenants with stores of their own. In the shared mode (the default) every
// tenant's rows live in the outbox's one database, the tenant only in each
// row's metadata. With Config.TenantStores, a tenant's outbox, inbox,
// schedules, sagas and dead letters live where its data lives: a database
// of its own, or a PostgreSQL schema of its own in the outbox's database.
// A unit of work then opens its transaction on the store of the call's
// tenant (fxbus.TenantOf), so that a command's commit stays one local
// transaction, and one relay serves every tenant's store.

// TenantStore says where one tenant's rows live.
type TenantStore struct {
	// ID is the tenant's id, as fxbus.TenantOf gives it. Not empty: the
	// default tenant's rows live in the outbox's own database.
	ID string
	// DB is the tenant's own database: its pool, which the outbox never
	// closes. Nil: the outbox's database, in Schema.
	DB *sql.DB
	// Dialect is DB's; default the outbox's (Config.Dialect).
	Dialect Dialect
	// Schema is the tenant's PostgreSQL schema in the outbox's database
	// (with DB nil) or in DB: a plain lower-case identifier,
	// [a-z_][a-z0-9_]{0,62}, checked when the source is read. The unit of
	// work sets it as the transaction's search_path, so the handler's own
	// statements and the outbox's find the tenant's tables; it is never
	// spliced into SQL. Empty with DB set: DB's default schema.
	Schema string
}

// TenantStores is the application's source of tenants with stores of
// their own: it resolves a tenant named by a message (as fxbus.Tenants
// does; give it to the bus too) and lists every tenant's store. The outbox
// reads Stores again once per poll interval: a tenant that appears is
// migrated and served, one that disappears is drained (see
// docs/tenants.md).
type TenantStores interface {
	fxbus.Tenants
	// Stores lists every tenant's store now.
	Stores(ctx context.Context) ([]TenantStore, error)
}

// TenantMigration brings the tables of a package beside the outbox to its
// code's version in one tenant's store: store.DB is never nil (a store in
// a schema of the outbox's database has that database), store.Dialect is
// set, and store.Schema is the PostgreSQL schema the tables belong in, or
// "". It is run with the outbox's own migration of the store (at Start,
// when a store appears, and by MigrateAll), which has succeeded first; it
// must be safe to run again, on a store already at its version, and
// concurrently from several replicas (take a lock, as Migrate does). Its
// error keeps the store from being served, and names the tenant.
type TenantMigration func(ctx context.Context, store TenantStore) error

// AsTenantMigration gives fxoutbox.Module a TenantMigration, through the
// value group "fxoutbox.tenant_migrations": fxsaga.Module gives its own.
func AsTenantMigration(m TenantMigration) fx.Option {
	return fx.Supply(fx.Annotate(m, fx.ResultTags(`group:"fxoutbox.tenant_migrations"`)))
}

// StaticTenantStores is the TenantStores of a fixed list of stores: it
// resolves each store's ID, byte for byte, and nothing else.
func StaticTenantStores(stores ...TenantStore) TenantStores {
	list := slices.Clone(stores)
	ids := make([]string, len(list))
	for i, s := range list {
		ids[i] = s.ID
	}
	return staticStores{Tenants: fxbus.StaticTenants(ids...), list: list}
}

type staticStores struct {
	fxbus.Tenants
	list []TenantStore
}

func (s staticStores) Stores(context.Context) ([]TenantStore, error) {
	return slices.Clone(s.list), nil
}

// schemaName is what a TenantStore's Schema may be: it needs no quoting.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// checkStore reports what is wrong with s.
func checkStore(s TenantStore) error {
	switch {
	case s.ID == "":
		return fmt.Errorf("fxoutbox: tenant store: empty ID (the default tenant's rows live in the outbox's own database)")
	case s.Schema != "" && !schemaName.MatchString(s.Schema):
		return fmt.Errorf("fxoutbox: tenant %q: schema %q is not a plain lower-case identifier ([a-z_][a-z0-9_]{0,62})", s.ID, s.Schema)
	case s.DB == nil && s.Schema == "":
		return fmt.Errorf("fxoutbox: tenant %q: neither a database nor a schema", s.ID)
	}
	return nil
}

// Tenants returns the ids of the tenants the outbox serves now, the
// default tenant ("") first, then those of Config.TenantStores in the
// order its Stores gave them when last read; a tenant that left the
// source is not among them (its store is drained, see docs/tenants.md).
func (o *Outbox) Tenants() []string { return o.stores.ids() }

// HasTenantStores reports whether tenants have stores of their own
// (Config.TenantStores): every tenant's rows but the default's then live
// in its store, and a tenant Tenants does not list (one that left the
// source, or one the outbox has not read yet) has none the outbox serves
// new work in, never the default store in its place. fxsaga's runner
// asks it, so that a saga of such a tenant is refused too.
func (o *Outbox) HasTenantStores() bool { return o.cfg.TenantStores != nil }

// InTenant runs fn in a transaction on tenant's store (its database, or
// the outbox's with its schema set for the transaction), under the
// connection budget, and commits it when fn returns nil. fn's context
// carries the transaction (Tx) and the tenant (fxbus.TenantOf): what
// packages beside the outbox (fxsaga's recovery, the repair tools) use to
// work in a tenant's store outside a unit of work. An unknown tenant is an
// error that wraps fxbus.ErrUnknownTenant, before anything begins. In the
// shared mode (no Config.TenantStores) every tenant's transaction is on
// the outbox's database, the tenant on fn's context alone.
func (o *Outbox) InTenant(ctx context.Context, tenant string, fn func(ctx context.Context) error) error {
	st, err := o.stores.byTenant(tenant, false)
	if err != nil {
		return fmt.Errorf("fxoutbox: InTenant: %w", err)
	}
	un, err := o.uow.beginOn(ctx, st)
	if err != nil {
		return fmt.Errorf("fxoutbox: InTenant: %w", err)
	}
	defer un.rollbackOnPanic()
	if err := fn(context.WithValue(fxbus.WithTenant(ctx, tenant), txKey{}, un)); err != nil {
		_ = un.rollback()
		return err
	}
	if err := un.commit(); err != nil {
		return fmt.Errorf("fxoutbox: InTenant: %w", err)
	}
	o.uow.committed(un)
	return nil
}

// AdminOf returns the Admin of tenant's store: the read and repair API
// over that tenant's rows alone. A tenant that left the source and whose
// store is being drained still has its Admin. An unknown tenant is an
// error that wraps fxbus.ErrUnknownTenant; so is any tenant but the
// default in the shared mode, where no Admin holds one tenant's rows
// alone.
func (o *Outbox) AdminOf(tenant string) (*Admin, error) {
	if tenant != "" && o.cfg.TenantStores == nil {
		return nil, fmt.Errorf("fxoutbox: AdminOf: %w %s: the outbox has no tenant stores (the shared mode)", fxbus.ErrUnknownTenant, quoteTenant(tenant))
	}
	st, err := o.stores.byTenant(tenant, true)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: AdminOf: %w", err)
	}
	return st.admin, nil
}
