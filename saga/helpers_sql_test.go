package fxsaga_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	fxsaga "github.com/fxcqrs/fxcqrs/saga"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"
)

// reachable checks a service's address, skipping the test (or failing it
// under FXCQRS_REQUIRE_SERVICES=1) when it cannot be reached.
func reachable(t testing.TB, env, hostport string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", hostport, 2*time.Second)
	if err != nil {
		if os.Getenv("FXCQRS_REQUIRE_SERVICES") == "1" {
			t.Fatalf("%s (%s) is unreachable and FXCQRS_REQUIRE_SERVICES=1: %v", env, hostport, err)
		}
		t.Skipf("%s (%s) is unreachable (%v): set %s to a running server, or FXCQRS_REQUIRE_SERVICES=1 to fail instead", env, hostport, err, env)
	}
	_ = conn.Close()
}

// database is one test's own database, migrated.
type database struct {
	dialect fxoutbox.Dialect
	db      *sql.DB
}

// openDatabase makes a database of the test's own on dialect: a file for
// SQLite, a schema for PostgreSQL, a database for MySQL/MariaDB; dropped
// when the test ends.
func openDatabase(t testing.TB, d fxoutbox.Dialect) database {
	t.Helper()
	name := fmt.Sprintf("fxcqrs_test_%d", rand.Uint64()%1_000_000_000_000)
	var db *sql.DB
	var err error
	switch d {
	case fxoutbox.SQLite:
		path := filepath.Join(t.TempDir(), "outbox.db")
		db, err = sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
		require.NoError(t, err)
	case fxoutbox.PostgreSQL:
		dsn := env("FXCQRS_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		reachable(t, "FXCQRS_POSTGRES_URL", u.Host)
		admin, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		_, err = admin.Exec("CREATE SCHEMA " + name)
		require.NoError(t, err)
		t.Cleanup(func() {
			_, _ = admin.Exec("DROP SCHEMA " + name + " CASCADE")
			_ = admin.Close()
		})
		q := u.Query()
		q.Set("search_path", name)
		u.RawQuery = q.Encode()
		db, err = sql.Open("pgx", u.String())
		require.NoError(t, err)
	case fxoutbox.MySQL:
		dsn := env("FXCQRS_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test?parseTime=true")
		host := dsn[strings.Index(dsn, "(")+1 : strings.Index(dsn, ")")]
		reachable(t, "FXCQRS_MYSQL_DSN", host)
		admin, err := sql.Open("mysql", dsn)
		require.NoError(t, err)
		_, err = admin.Exec("CREATE DATABASE " + name)
		require.NoError(t, err)
		t.Cleanup(func() {
			_, _ = admin.Exec("DROP DATABASE " + name)
			_ = admin.Close()
		})
		db, err = sql.Open("mysql", strings.Replace(dsn, "/test?", "/"+name+"?", 1))
		require.NoError(t, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, fxoutbox.Migrate(context.Background(), db, d, fxoutbox.Tables{}))
	require.NoError(t, fxsaga.Migrate(context.Background(), db, d, fxsaga.Tables{}))
	return database{dialect: d, db: db}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// forEachDatabase runs test on each dialect, in subtests that skip (or
// fail, in CI) on their own when their server is unreachable.
func forEachDatabase(t *testing.T, test func(t *testing.T, d database)) {
	for _, dialect := range []fxoutbox.Dialect{fxoutbox.SQLite, fxoutbox.PostgreSQL, fxoutbox.MySQL} {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			test(t, openDatabase(t, dialect))
		})
	}
}

// count returns how many rows a query counts.
func count(t testing.TB, db *sql.DB, query string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(query).Scan(&n))
	return n
}
