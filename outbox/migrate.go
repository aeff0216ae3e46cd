package fxoutbox

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/fxcqrs/fxcqrs/internal/sqlschema"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema returns the SQL that creates the outbox's tables for d, with the
// given table names (defaults for the empty ones): the shipped migration,
// to run with Migrate or with the application's own migration tool.
func Schema(d Dialect, t Tables) (string, error) {
	t = t.withDefaults()
	if err := t.validate(); err != nil {
		return "", err
	}
	schema, err := sqlschema.Render(migrations, "migrations/"+d.String()+".sql", map[string]string{
		"Outbox":      d.quote(t.Outbox),
		"OutboxIndex": d.quote(t.Outbox + "_topic_id"),
		"DeadLetters": d.quote(t.DeadLetters),
		"Leases":      d.quote(t.Leases),
		"Inbox":       d.quote(t.Inbox),
	})
	if err != nil {
		return "", fmt.Errorf("fxoutbox: no schema for dialect %s: %w", d, err)
	}
	return schema, nil
}

// Migrate creates the outbox's tables in db if they do not exist. The
// outbox creates nothing behind the application's back at run time: call
// Migrate at deployment, or run Schema's SQL with your own tool.
func Migrate(ctx context.Context, db *sql.DB, d Dialect, t Tables) error {
	schema, err := Schema(d, t)
	if err != nil {
		return err
	}
	if err := sqlschema.Run(ctx, db, schema); err != nil {
		return fmt.Errorf("fxoutbox: migrate (%s): %w", d, err)
	}
	return nil
}
