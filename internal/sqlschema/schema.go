package sqlschema

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
)

// A tenant's store in a PostgreSQL schema of its own: a module's
// migrations run with the schema as the connection's search_path, so that
// the tables, indexes and version table they create, which they name
// without a schema, are created in it. The outbox and the saga tables
// share this one implementation, so that both modules' tables of a tenant
// land in the same schema by the same rule.

// MigrateIn is Migrate of db's PostgreSQL schema: on one connection whose
// search_path is schema while it runs. schema "" is Migrate. The schema
// must exist (the application's, as a tenant's database is) and be a
// plain identifier the caller checked: it is given as a parameter, never
// spliced into SQL.
func (s Set) MigrateIn(ctx context.Context, db *sql.DB, schema string) error {
	if schema == "" {
		return s.Migrate(ctx, db)
	}
	if s.Flavor != PostgreSQL {
		return fmt.Errorf("%s: migrate: schema %q: a schema per tenant needs PostgreSQL", s.Module, schema)
	}
	return inSchema(ctx, db, schema, func(conn *sql.Conn) error { return s.MigrateConn(ctx, conn) })
}

// CheckIn is Check of db's PostgreSQL schema; schema "" is Check.
func (s Set) CheckIn(ctx context.Context, db *sql.DB, schema string) error {
	if schema == "" {
		return s.Check(ctx, db)
	}
	if s.Flavor != PostgreSQL {
		return fmt.Errorf("%s: check: schema %q: a schema per tenant needs PostgreSQL", s.Module, schema)
	}
	return inSchema(ctx, db, schema, func(conn *sql.Conn) error { return s.CheckConn(ctx, conn) })
}

// inSchema runs fn on a connection of db whose session's search_path is
// schema, and sets it back before the connection returns to the pool; a
// connection that cannot be set back is closed, so that no later work on
// the pool finds the tenant's tables by accident.
func inSchema(ctx context.Context, db *sql.DB, schema string, fn func(*sql.Conn) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var was string
	if err := conn.QueryRowContext(ctx, "SELECT current_setting('search_path')").Scan(&was); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "SELECT set_config('search_path', $1, false)", schema); err != nil {
		return err
	}
	err = fn(conn)
	if _, resetErr := conn.ExecContext(context.Background(), "SELECT set_config('search_path', $1, false)", was); resetErr != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn }) // discarded, not pooled
		return errors.Join(err, resetErr)
	}
	return err
}
