package schema

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
	if !Known(d) {
		return sqlschema.Set{}, fmt.Errorf("fxoutbox: no schema for %v", d)
	}
	t = WithDefaults(t)
	if err := Validate(t); err != nil {
		return sqlschema.Set{}, err
	}
	ms, err := sqlschema.Load(migrations, "migrations/"+d.String(), flavor(d), t.Migrations, map[string]string{
		"Outbox":                  Quote(d, t.Outbox),
		"OutboxIndex":             Quote(d, sqlschema.IndexName(t.Outbox, "topic_id")),
		"OutboxLaneIndex":         Quote(d, sqlschema.IndexName(t.Outbox, "topic_lane_id")),
		"DeadLetters":             Quote(d, t.DeadLetters),
		"Leases":                  Quote(d, t.Leases),
		"Inbox":                   Quote(d, t.Inbox),
		"InboxHandledIndex":       Quote(d, sqlschema.IndexName(t.Inbox, "handled")),
		"Scheduled":               Quote(d, t.Scheduled),
		"ScheduledDueIndex":       Quote(d, sqlschema.IndexName(t.Scheduled, "due")),
		"ScheduledIDIndex":        Quote(d, sqlschema.IndexName(t.Scheduled, "message_id")),
		"Repairs":                 Quote(d, t.Repairs),
		"InboundDead":             Quote(d, t.InboundDead),
		"InboundDeadKeyIndex":     Quote(d, sqlschema.IndexName(t.InboundDead, "key")),
		"OutboxVersionIndex":      Quote(d, sqlschema.IndexName(t.Outbox, "version")),
		"ScheduledVersionIndex":   Quote(d, sqlschema.IndexName(t.Scheduled, "version")),
		"DeadLettersVersionIndex": Quote(d, sqlschema.IndexName(t.DeadLetters, "version")),
		"InboundDeadVersionIndex": Quote(d, sqlschema.IndexName(t.InboundDead, "version")),
		"OutboxTenantIndex":       Quote(d, sqlschema.IndexName(t.Outbox, "topic_lane_tenant_id")),
		"LaneLeases":              Quote(d, LaneLeases(t)),
		"RateLimits":              Quote(d, RateLimits(t)),
		"DeadLettersTenantIndex":  Quote(d, sqlschema.IndexName(t.DeadLetters, "tenant")),
		"InboundDeadTenantIndex":  Quote(d, sqlschema.IndexName(t.InboundDead, "tenant")),
		"ScheduledTenantIndex":    Quote(d, sqlschema.IndexName(t.Scheduled, "tenant")),
	})
	if err != nil {
		return sqlschema.Set{}, fmt.Errorf("fxoutbox: schema for %s: %w", d, err)
	}
	return sqlschema.Set{Module: "fxoutbox", Flavor: flavor(d), Versions: t.Migrations, Migrations: ms}, nil
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
// order (see fxoutbox.Migrate).
func Migrate(ctx context.Context, db *sql.DB, d Dialect, t Tables) error {
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return set.Migrate(ctx, db)
}

// Check reports whether db's outbox schema is at the version this code
// needs (see fxoutbox.CheckSchema).
func Check(ctx context.Context, db *sql.DB, d Dialect, t Tables) error {
	set, err := migrationSet(d, t)
	if err != nil {
		return err
	}
	return set.Check(ctx, db)
}
