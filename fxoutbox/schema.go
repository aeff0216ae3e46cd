package fxoutbox

import (
	"context"
	"database/sql"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// The outbox's place in the database, handed on from its own package
// (internal/schema): the dialects, the tables' names, the migrations and
// the check at start.

// Dialect is the SQL database the outbox lives in: [PostgreSQL], [MySQL]
// or [SQLite]. In JSON and YAML: "postgresql", "mysql" or "sqlite".
type Dialect = schema.Dialect

const (
	// PostgreSQL 13 or later, through pgx's database/sql driver ("pgx").
	PostgreSQL = schema.PostgreSQL
	// MySQL 8.0 or later, or MariaDB 10.6 or later
	// (github.com/go-sql-driver/mysql, with parseTime=true).
	MySQL = schema.MySQL
	// SQLite 3.35 or later, such as modernc.org/sqlite: one process only
	// (see the package documentation).
	SQLite = schema.SQLite
)

// Tables names the outbox's tables: Outbox, DeadLetters, Leases, Inbox,
// Scheduled, Repairs, InboundDead and Migrations, each with a default
// when empty. Each is validated as an SQL identifier and quoted; none is
// interpolated unchecked.
type Tables = schema.Tables

// Migration is one numbered step of the outbox's schema, for a dialect
// and its tables. Its SQL ends by recording the step in the Migrations
// table, so that a migration tool (goose, atlas, migrate) that runs it
// leaves the schema as Migrate would, and the outbox's start check
// passes.
type Migration = schema.Migration

// Migrations returns the outbox's migrations for d and t (defaults for
// the empty names), in order, for a migration tool of the application's.
func Migrations(d Dialect, t Tables) ([]Migration, error) { return schema.Migrations(d, t) }

// Schema returns the SQL that creates the outbox's tables for d, with the
// given table names (defaults for the empty ones): every migration, in
// order, each recording itself, for the application's own migration tool.
func Schema(d Dialect, t Tables) (string, error) { return schema.Schema(d, t) }

// Migrate applies the outbox's migrations that db has not applied yet, in
// order, recorded in the Migrations table. Replicas may run it at once: it
// takes a lock (an advisory lock on PostgreSQL, GET_LOCK on MySQL) and
// the second finds the work done. Each migration runs in a transaction on
// PostgreSQL and SQLite; MySQL commits DDL statement by statement, so a
// migration that fails there halfway must be finished by hand (the error
// names it). A database that the older, unversioned Migrate created is
// upgraded: the first migration finds its tables and changes nothing.
//
// The outbox creates nothing behind the application's back at run time:
// call Migrate at deployment, or run Migrations with your own tool. The
// module checks at start that the schema is at the version it needs.
func Migrate(ctx context.Context, db *sql.DB, d Dialect, t Tables) error {
	return schema.Migrate(ctx, db, d, t)
}

// CheckSchema reports whether db's outbox schema is at the version this
// code needs, with an error that names the table and says what to do
// when it is not. The outbox's Start runs it.
func CheckSchema(ctx context.Context, db *sql.DB, d Dialect, t Tables) error {
	return schema.Check(ctx, db, d, t)
}
