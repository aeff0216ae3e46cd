package fxsaga

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/internal/sqlschema"
)

// The schema is numbered migrations per dialect, migrations/DIALECT/
// NNNN_name.sql, each a template of the configured table names. A shipped
// migration is never edited: a change is a new one.
//
//go:embed migrations
var migrations embed.FS

// Migration is one numbered step of the saga tables' schema; its SQL ends
// by recording the step in the Migrations table (see fxoutbox.Migration).
type Migration = fxoutbox.Migration

// Migrations returns the saga tables' migrations for d and t (defaults
// for the empty names), in order, for a migration tool of the
// application's.
func Migrations(d fxoutbox.Dialect, t Tables) ([]Migration, error) {
	set, err := migrationSet(d, t)
	if err != nil {
		return nil, err
	}
	out := make([]Migration, len(set.Migrations))
	for i, m := range set.Migrations {
		out[i] = Migration(m)
	}
	return out, nil
}

func migrationSet(d fxoutbox.Dialect, t Tables) (sqlschema.Set, error) {
	f, ok := map[fxoutbox.Dialect]sqlschema.Flavor{
		fxoutbox.PostgreSQL: sqlschema.PostgreSQL, fxoutbox.MySQL: sqlschema.MySQL, fxoutbox.SQLite: sqlschema.SQLite,
	}[d]
	if !ok {
		return sqlschema.Set{}, fmt.Errorf("fxsaga: no schema for %v", d)
	}
	t = t.withDefaults()
	if err := t.validate(); err != nil {
		return sqlschema.Set{}, err
	}
	ms, err := sqlschema.Load(migrations, "migrations/"+d.String(), f, t.Migrations, map[string]string{
		"Sagas": quote(d, t.Sagas), "SagasIndex": quote(d, sqlschema.IndexName(t.Sagas, "name_status")), "Log": quote(d, t.Log),
		"WaitingIndex": quote(d, sqlschema.IndexName(t.Sagas, "waiting")), "DeadlineIndex": quote(d, sqlschema.IndexName(t.Sagas, "deadline")),
		"KeyIndex": quote(d, sqlschema.IndexName(t.Sagas, "business_key")), "ActiveKeyIndex": quote(d, sqlschema.IndexName(t.Sagas, "active_key")),
		"CreatedIndex":         quote(d, sqlschema.IndexName(t.Sagas, "created")),
		"ContextVersionIndex":  quote(d, sqlschema.IndexName(t.Sagas, "context_version")),
		"TenantWaitingIndex":   quote(d, sqlschema.IndexName(t.Sagas, "tenant_waiting")),
		"TenantActiveKeyIndex": quote(d, sqlschema.IndexName(t.Sagas, "tenant_active_key")),
	})
	if err != nil {
		return sqlschema.Set{}, fmt.Errorf("fxsaga: schema for %s: %w", d, err)
	}
	return sqlschema.Set{Module: "fxsaga", Flavor: f, Versions: t.Migrations, Migrations: ms}, nil
}

// Schema returns the SQL that creates the saga tables for d: every
// migration, in order, each recording itself.
func Schema(d fxoutbox.Dialect, t Tables) (string, error) {
	set, err := migrationSet(d, t)
	if err != nil {
		return "", err
	}
	return set.Schema(), nil
}

// Migrate applies the saga tables' migrations that db has not applied
// yet, under a lock, as fxoutbox.Migrate does.
func Migrate(ctx context.Context, db *sql.DB, d fxoutbox.Dialect, t Tables) error {
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return set.Migrate(ctx, db)
}

// TenantMigration migrates the saga tables t (Tables{}: the defaults)
// into a tenant's store when fxoutbox migrates it (give it to
// fxoutbox.Config.TenantMigrations, or to fxoutbox.AsTenantMigration, or
// to fxoutbox.MigrateAll at deployment): into store.DB, of
// store.Dialect, and on PostgreSQL in store.Schema when it is set, as the
// search_path of the migrating connection, so that the tables, their
// indexes and their migrations table are created in the tenant's schema,
// where a tenant's transaction (whose search_path is that schema) finds
// them by the plain names the SQL store uses. It takes the lock Migrate
// takes, and is a no-op on a store already at this code's version.
// Module gives it to the outbox by itself when the Store is an *SQL (see
// Module).
func TenantMigration(t Tables) fxoutbox.TenantMigration {
	return func(ctx context.Context, store fxoutbox.TenantStore) error {
		set, err := migrationSet(store.Dialect, t)
		if err != nil {
			return err
		}
		return set.MigrateIn(ctx, store.DB, store.Schema)
	}
}

// CheckSchema reports whether the store's tables are at the version this
// code needs, with an error that names the table and says what to do
// when they are not. Module runs it at start for a Store that has it.
func (s *SQL) CheckSchema(ctx context.Context) error {
	set, err := migrationSet(s.d, s.tables)
	if err != nil {
		return err
	}
	return set.Check(ctx, s.db)
}
