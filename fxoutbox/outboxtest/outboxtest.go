// Package outboxtest gives a test a database of its own on each dialect
// the outbox module supports, migrated, and dropped when the test ends:
// a file for SQLite, a schema for PostgreSQL, a database for
// MySQL/MariaDB. The servers are found through environment variables;
// one that cannot be reached skips the test, naming its variable, or
// fails it when FXCQRS_REQUIRE_SERVICES=1 (as in CI).
//
//	FXCQRS_POSTGRES_URL  default postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//	FXCQRS_MYSQL_DSN     default root@tcp(127.0.0.1:3306)/test?parseTime=true
//
// It imports the three drivers (pgx's stdlib, go-sql-driver/mysql and
// modernc.org/sqlite); import it from tests only.
package outboxtest

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	_ "modernc.org/sqlite"             // the "sqlite" driver
)

// Database is a test's own database.
type Database struct {
	// Dialect is the database's dialect.
	Dialect fxoutbox.Dialect
	// DB is the pool, closed when the test ends.
	DB *sql.DB
	// DSN is how another process (a child the test starts) opens it, with
	// Driver.
	DSN string
	// Driver is the database/sql driver's name: "pgx", "mysql" or
	// "sqlite".
	Driver string
}

// Dialects is every dialect, in the order ForEach runs them.
var Dialects = []fxoutbox.Dialect{fxoutbox.SQLite, fxoutbox.PostgreSQL, fxoutbox.MySQL}

// Open makes a database of t's own on d, with the outbox's tables
// migrated.
func Open(t testing.TB, d fxoutbox.Dialect) Database {
	t.Helper()
	db := OpenEmpty(t, d)
	must(t, fxoutbox.Migrate(context.Background(), db.DB, d, fxoutbox.Tables{}))
	return db
}

// OpenEmpty makes a database of t's own on d with no table in it.
func OpenEmpty(t testing.TB, d fxoutbox.Dialect) Database {
	t.Helper()
	name := fmt.Sprintf("fxcqrs_test_%d", rand.Uint64()%1_000_000_000_000)
	var db Database
	switch d {
	case fxoutbox.SQLite:
		path := filepath.Join(t.TempDir(), "test.db")
		db = Database{Driver: "sqlite", DSN: "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate"}
	case fxoutbox.PostgreSQL:
		u, err := url.Parse(Env("FXCQRS_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
		must(t, err)
		Reachable(t, "FXCQRS_POSTGRES_URL", u.Host)
		admin(t, "pgx", u.String(), "CREATE SCHEMA "+name, "DROP SCHEMA "+name+" CASCADE")
		q := u.Query()
		q.Set("search_path", name)
		u.RawQuery = q.Encode()
		db = Database{Driver: "pgx", DSN: u.String()}
	case fxoutbox.MySQL:
		cfg, err := mysql.ParseDSN(Env("FXCQRS_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test?parseTime=true"))
		must(t, err)
		Reachable(t, "FXCQRS_MYSQL_DSN", cfg.Addr)
		admin(t, "mysql", cfg.FormatDSN(), "CREATE DATABASE "+name, "DROP DATABASE "+name)
		cfg.DBName = name
		db = Database{Driver: "mysql", DSN: cfg.FormatDSN()}
	default:
		t.Fatalf("outboxtest: unknown dialect %v", d)
	}
	db.Dialect = d
	pool, err := db.Pool()
	must(t, err)
	t.Cleanup(func() { _ = pool.Close() })
	db.DB = pool
	return db
}

// Pool opens a pool on the database, as a child process of the test
// does: on SQLite, with one connection, the single writer fxoutbox
// requires (see fxoutbox's package doc, "SQLite").
func (d Database) Pool() (*sql.DB, error) {
	pool, err := sql.Open(d.Driver, d.DSN)
	if err != nil {
		return nil, err
	}
	if d.Dialect == fxoutbox.SQLite {
		pool.SetMaxOpenConns(1)
	}
	return pool, nil
}

// admin runs create on the server now and drop when the test ends.
func admin(t testing.TB, driver, dsn, create, drop string) {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	must(t, err)
	_, err = db.Exec(create)
	must(t, err)
	t.Cleanup(func() {
		_, _ = db.Exec(drop)
		_ = db.Close()
	})
}

// ForEach runs test on a database of each dialect, in parallel subtests
// named by the dialect, which skip (or fail, in CI) on their own when
// their server is unreachable.
func ForEach(t *testing.T, test func(t *testing.T, d Database)) {
	t.Helper()
	for _, dialect := range Dialects {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			test(t, Open(t, dialect))
		})
	}
}

// ForEachEmpty is ForEach on databases with no table in them.
func ForEachEmpty(t *testing.T, test func(t *testing.T, d Database)) {
	t.Helper()
	for _, dialect := range Dialects {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			test(t, OpenEmpty(t, dialect))
		})
	}
}

// Reachable skips t, naming env, when hostport does not answer; under
// FXCQRS_REQUIRE_SERVICES=1 it fails t instead.
func Reachable(t testing.TB, env, hostport string) {
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

// Env returns the environment variable name, or def when it is unset.
func Env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Count returns what a query that counts rows returns.
func Count(t testing.TB, db *sql.DB, query string) int {
	t.Helper()
	var n int
	must(t, db.QueryRow(query).Scan(&n))
	return n
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
