// Package schema is the outbox's place in the database: the dialects, the
// tables and their names, every statement the outbox runs, and the
// numbered migrations with the check at start. The root package fxoutbox
// hands its public names on (fxoutbox.Dialect, fxoutbox.Tables,
// fxoutbox.Migrate, …); the relay, the admin API and fxsaga's SQL build
// on it.
package schema

import (
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/fxcqrs/fxcqrs/internal/sqlschema"
)

// Dialect is the SQL database the outbox lives in.
type Dialect uint8

const (
	// PostgreSQL 13 or later, through pgx's database/sql driver ("pgx").
	PostgreSQL Dialect = iota + 1
	// MySQL 8.0 or later, or MariaDB 10.6 or later
	// (github.com/go-sql-driver/mysql, with parseTime=true).
	MySQL
	// SQLite 3.35 or later, such as modernc.org/sqlite: one process only
	// (see the package documentation).
	SQLite
)

// String names the dialect.
func (d Dialect) String() string {
	switch d {
	case PostgreSQL:
		return "postgresql"
	case MySQL:
		return "mysql"
	case SQLite:
		return "sqlite"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// Known reports whether d is one of the three dialects.
func Known(d Dialect) bool { return d >= PostgreSQL && d <= SQLite }

// MarshalText names the dialect: "postgresql", "mysql" or "sqlite".
func (d Dialect) MarshalText() ([]byte, error) {
	if !Known(d) {
		return nil, fmt.Errorf("fxoutbox: unknown %v", d)
	}
	return []byte(d.String()), nil
}

// UnmarshalText reads a dialect's name, as configuration files give it:
// "postgresql" (or "postgres"), "mysql" (or "mariadb"), "sqlite".
func (d *Dialect) UnmarshalText(b []byte) error {
	switch string(b) {
	case "postgresql", "postgres":
		*d = PostgreSQL
	case "mysql", "mariadb":
		*d = MySQL
	case "sqlite":
		*d = SQLite
	default:
		return fmt.Errorf("fxoutbox: unknown dialect %q: want postgresql, mysql or sqlite", b)
	}
	return nil
}

// Rebind turns a query's ? placeholders into the dialect's own ($1, $2 for
// PostgreSQL), for repositories that write in Tx.
func (d Dialect) Rebind(query string) string {
	if d != PostgreSQL {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Quote quotes a validated identifier for d.
func Quote(d Dialect, name string) string { return sqlschema.Quote(d == MySQL, name) }

// flavor is d as the shared migration machinery knows it.
func flavor(d Dialect) sqlschema.Flavor {
	return map[Dialect]sqlschema.Flavor{PostgreSQL: sqlschema.PostgreSQL, MySQL: sqlschema.MySQL, SQLite: sqlschema.SQLite}[d]
}

// In is query with its %s filled by n placeholders, rebound for d: the
// statements that take a list of ids.
func In(d Dialect, query string, n int) string {
	return d.Rebind(fmt.Sprintf(query, strings.TrimSuffix(strings.Repeat("?, ", n), ", ")))
}

// Rollback rolls tx back; a transaction already done is no error.
func Rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("fxoutbox: rollback: %w", err)
	}
	return nil
}
