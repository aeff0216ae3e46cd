package fxoutbox

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"fmt"
	"strings"
	"text/template"
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
	src, err := migrations.ReadFile("migrations/" + d.String() + ".sql")
	if err != nil {
		return "", fmt.Errorf("fxoutbox: no schema for dialect %s", d)
	}
	tmpl, err := template.New(d.String()).Parse(string(src))
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]string{
		"Outbox":      d.quote(t.Outbox),
		"OutboxIndex": d.quote(t.Outbox + "_topic_id"),
		"DeadLetters": d.quote(t.DeadLetters),
		"Leases":      d.quote(t.Leases),
		"Inbox":       d.quote(t.Inbox),
	})
	return b.String(), err
}

// Migrate creates the outbox's tables in db if they do not exist. The
// outbox creates nothing behind the application's back at run time: call
// Migrate at deployment, or run Schema's SQL with your own tool.
func Migrate(ctx context.Context, db *sql.DB, d Dialect, t Tables) error {
	schema, err := Schema(d, t)
	if err != nil {
		return err
	}
	for _, stmt := range strings.Split(schema, ";") {
		if strings.TrimSpace(stripComments(stmt)) == "" {
			continue
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("fxoutbox: migrate (%s): %w", d, err)
		}
	}
	return nil
}

func stripComments(stmt string) string {
	var b strings.Builder
	for _, line := range strings.Split(stmt, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
			b.WriteString("\n")
		}
	}
	return b.String()
}
