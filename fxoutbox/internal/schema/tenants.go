package schema

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
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
// whose search_path is s while it runs. The schema must exist: it is the
// application's, and Migrate creates the outbox's tables in it, nothing
// else.
func MigrateIn(ctx context.Context, db *sql.DB, d Dialect, t Tables, s string) error {
	if s == "" {
		return Migrate(ctx, db, d, t)
	}
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return inSchema(ctx, db, s, func(conn *sql.Conn) error { return set.MigrateConn(ctx, conn) })
}

// CheckIn is Check of db's schema s (PostgreSQL).
func CheckIn(ctx context.Context, db *sql.DB, d Dialect, t Tables, s string) error {
	if s == "" {
		return Check(ctx, db, d, t)
	}
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return inSchema(ctx, db, s, func(conn *sql.Conn) error { return set.CheckConn(ctx, conn) })
}

// inSchema runs fn on a connection of db whose session's search_path is
// s, and sets it back before the connection returns to the pool; a
// connection that cannot be set back is closed, so that no later work on
// the pool finds the tenant's tables by accident.
func inSchema(ctx context.Context, db *sql.DB, s string, fn func(*sql.Conn) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var was string
	if err := conn.QueryRowContext(ctx, "SELECT current_setting('search_path')").Scan(&was); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "SELECT set_config('search_path', $1, false)", s); err != nil {
		return err
	}
	err = fn(conn)
	if _, resetErr := conn.ExecContext(context.Background(), "SELECT set_config('search_path', $1, false)", was); resetErr != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn }) // discarded, not pooled
		return errors.Join(err, resetErr)
	}
	return err
}
