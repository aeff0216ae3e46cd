package fxoutbox

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/fxcqrs/fxcqrs/internal/sqlschema"
)

// The schema is numbered migrations per dialect, migrations/DIALECT/
// NNNN_name.sql, each a template of the configured table names. A shipped
// migration is never edited: a change is a new one.
//
//go:embed migrations
var migrations embed.FS

// Migration is one numbered step of the outbox's schema, for a dialect
// and its tables. Its SQL ends by recording the step in the Migrations
// table, so that a migration tool (goose, atlas, migrate) that runs it
// leaves the schema as Migrate would, and the outbox's start check
// passes.
type Migration struct {
	// Version numbers the step, from 1.
	Version int
	// Name says what it does.
	Name string
	// SQL is its statements, separated by semicolons.
	SQL string
}

// Migrations returns the outbox's migrations for d and t (defaults for
// the empty names), in order, for a migration tool of the application's.
func Migrations(d Dialect, t Tables) ([]Migration, error) {
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

func migrationSet(d Dialect, t Tables) (sqlschema.Set, error) {
	if d < PostgreSQL || d > SQLite {
		return sqlschema.Set{}, fmt.Errorf("fxoutbox: no schema for %v", d)
	}
	t = t.withDefaults()
	if err := t.validate(); err != nil {
		return sqlschema.Set{}, err
	}
	ms, err := sqlschema.Load(migrations, "migrations/"+d.String(), d.flavor(), t.Migrations, map[string]string{
		"Outbox":              d.quote(t.Outbox),
		"OutboxIndex":         d.quote(sqlschema.IndexName(t.Outbox, "topic_id")),
		"OutboxLaneIndex":     d.quote(sqlschema.IndexName(t.Outbox, "topic_lane_id")),
		"DeadLetters":         d.quote(t.DeadLetters),
		"Leases":              d.quote(t.Leases),
		"Inbox":               d.quote(t.Inbox),
		"InboxHandledIndex":   d.quote(sqlschema.IndexName(t.Inbox, "handled")),
		"Scheduled":           d.quote(t.Scheduled),
		"ScheduledDueIndex":   d.quote(sqlschema.IndexName(t.Scheduled, "due")),
		"ScheduledIDIndex":    d.quote(sqlschema.IndexName(t.Scheduled, "message_id")),
		"Repairs":             d.quote(t.Repairs),
		"InboundDead":         d.quote(t.InboundDead),
		"InboundDeadKeyIndex": d.quote(sqlschema.IndexName(t.InboundDead, "key")),
	})
	if err != nil {
		return sqlschema.Set{}, fmt.Errorf("fxoutbox: schema for %s: %w", d, err)
	}
	return sqlschema.Set{Module: "fxoutbox", Flavor: d.flavor(), Versions: t.Migrations, Migrations: ms}, nil
}

// Schema returns the SQL that creates the outbox's tables for d, with the
// given table names (defaults for the empty ones): every migration, in
// order, each recording itself, for the application's own migration tool.
func Schema(d Dialect, t Tables) (string, error) {
	set, err := migrationSet(d, t)
	if err != nil {
		return "", err
	}
	return set.Schema(), nil
}

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
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return set.Migrate(ctx, db)
}

// CheckSchema reports whether db's outbox schema is at the version this
// code needs, with an error that names the table and says what to do
// when it is not. The outbox's Start runs it.
func CheckSchema(ctx context.Context, db *sql.DB, d Dialect, t Tables) error {
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return set.Check(ctx, db)
}
