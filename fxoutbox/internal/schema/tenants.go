package schema

import (
	"context"
	"database/sql"
)

// A tenant's store in a PostgreSQL schema of its own: the outbox's
// statements name its tables with the schema (InSchema), and its
// migrations run with the schema as the connection's search_path
// (MigrateIn, CheckIn), where the migrations' own names (indexes, the
// migrations table) need no schema.

// InSchema is t, with its defaults, with every table named in the
// PostgreSQL schema s: Quote then writes "s"."table". s must be a plain
// lower-case identifier, checked by the caller (fxoutbox's checkStore):
// it is not quoted again. The result is for NewQueries, not Validate.
func InSchema(t Tables, s string) Tables {
	t = WithDefaults(t)
	if s == "" {
		return t
	}
	in := func(name string) string { return s + `"."` + name }
	return Tables{
		Outbox: in(t.Outbox), DeadLetters: in(t.DeadLetters), Leases: in(t.Leases), Inbox: in(t.Inbox),
		Scheduled: in(t.Scheduled), Repairs: in(t.Repairs), InboundDead: in(t.InboundDead), Migrations: in(t.Migrations),
	}
}

// SetSchema is the statement that makes s the search_path of the
// transaction it runs in ($1: s, a parameter), gone at its end.
const SetSchema = "SELECT set_config('search_path', $1, true)"

// MigrateIn is Migrate of db's schema s (PostgreSQL): on one connection
// whose search_path is s while it runs (sqlschema.Set.MigrateIn, which
// fxsaga's tenant migration shares). The schema must exist: it is the
// application's, and Migrate creates the outbox's tables in it, nothing
// else.
func MigrateIn(ctx context.Context, db *sql.DB, d Dialect, t Tables, s string) error {
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return set.MigrateIn(ctx, db, s)
}

// CheckIn is Check of db's schema s (PostgreSQL).
func CheckIn(ctx context.Context, db *sql.DB, d Dialect, t Tables, s string) error {
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return set.CheckIn(ctx, db, s)
}
