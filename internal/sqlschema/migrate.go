package sqlschema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Flavor is the database a schema is for, as far as migrating it goes:
// how it locks, whether DDL runs in a transaction, how it writes "now".
type Flavor uint8

// The flavors.
const (
	PostgreSQL Flavor = iota + 1
	MySQL
	SQLite
)

// Migration is one numbered step of a module's schema, rendered for its
// tables. Its SQL records the step in the module's version table, so that
// a migration tool that runs it leaves the schema as Migrate would.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Set is one module's migrations on one database.
type Set struct {
	Module     string // "fxoutbox": errors start with it
	Flavor     Flavor
	Versions   string // the version table's name, unquoted
	Migrations []Migration
}

// Load reads dir's migrations from fsys, files named NNNN_name.sql, in
// order, renders each with data, and has each record itself in the
// version table.
func Load(fsys fs.FS, dir string, f Flavor, versions string, data map[string]string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", e.Name())
		}
		body, err := Render(fsys, path.Join(dir, e.Name()), data)
		if err != nil {
			return nil, err
		}
		q := Quote(f == MySQL, versions)
		out = append(out, Migration{Version: v, Name: name, SQL: versionTable(f, q) + ";\n" + strings.TrimSpace(body) + "\n" +
			fmt.Sprintf("INSERT INTO %s (version, name, applied_at) VALUES (%d, '%s', %s);\n", q, v, name, nowText(f))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations of %s: want versions 1 to %d in order, found %d at place %d", dir, len(out), m.Version, i+1)
		}
	}
	return out, nil
}

func versionTable(f Flavor, q string) string {
	return "CREATE TABLE IF NOT EXISTS " + q + " (version INTEGER NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, applied_at VARCHAR(64) NOT NULL)" +
		map[Flavor]string{MySQL: " ENGINE = InnoDB"}[f]
}

func nowText(f Flavor) string {
	switch f {
	case PostgreSQL:
		return "CAST(now() AS TEXT)"
	case MySQL:
		return "CAST(NOW(6) AS CHAR)"
	}
	return "CURRENT_TIMESTAMP"
}

// Latest is the version the code needs: its last migration's.
func (s Set) Latest() int { return len(s.Migrations) }

// Schema is every migration's SQL, in order: the whole schema.
func (s Set) Schema() string {
	var b strings.Builder
	for _, m := range s.Migrations {
		fmt.Fprintf(&b, "-- %s migration %d: %s\n%s\n", s.Module, m.Version, m.Name, m.SQL)
	}
	return b.String()
}

// sqliteLock serializes Migrate on SQLite, a database of one process:
// it has no lock of the kind PostgreSQL and MySQL lend.
var sqliteLock sync.Mutex

// Migrate applies the migrations not yet recorded, in order, under a lock
// that a second replica running Migrate at once waits for: an advisory
// lock on PostgreSQL, GET_LOCK on MySQL. Each runs in a transaction on
// PostgreSQL and SQLite, where DDL is transactional; on MySQL each
// statement commits on its own, so a migration that fails halfway must be
// finished by hand (the error says which).
func (s Set) Migrate(ctx context.Context, db *sql.DB) (err error) {
	if s.Flavor == SQLite {
		// Before the connection: opening one runs the DSN's pragmas
		// (journal_mode), which meet another migration's writes with
		// SQLITE_BUSY at once, whatever the busy timeout.
		sqliteLock.Lock()
		defer sqliteLock.Unlock()
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return s.migrateOn(ctx, conn)
}

// MigrateConn is Migrate on conn, a connection the caller prepared (a
// PostgreSQL search_path set to a tenant's schema).
func (s Set) MigrateConn(ctx context.Context, conn *sql.Conn) error {
	if s.Flavor == SQLite {
		sqliteLock.Lock()
		defer sqliteLock.Unlock()
	}
	return s.migrateOn(ctx, conn)
}

func (s Set) migrateOn(ctx context.Context, conn *sql.Conn) (err error) {
	q := Quote(s.Flavor == MySQL, s.Versions)
	// At its version already (every start but a deployment's first):
	// nothing to do, and no lock to queue for behind another schema's or
	// another replica's migration. A version is recorded by its
	// migration's last statement, so one read says all of it is there.
	if applied, err := appliedOn(ctx, conn, q); err == nil && applied == s.Latest() {
		return nil
	}
	unlock, err := s.lock(ctx, conn)
	if err != nil {
		return fmt.Errorf("%s: migrate: lock: %w", s.Module, err)
	}
	defer func() { err = errors.Join(err, unlock()) }()
	if s.Flavor == MySQL {
		// Its DDL commits statement by statement: a migration ended
		// between two would leave its step half done and unrecorded, and
		// every later try failing on what it did (a column that exists).
		// Once the lock is held, it runs to its end.
		ctx = context.WithoutCancel(ctx)
	}
	if _, err := conn.ExecContext(ctx, versionTable(s.Flavor, q)); err != nil {
		return fmt.Errorf("%s: migrate: %w", s.Module, err)
	}
	applied, err := appliedOn(ctx, conn, q)
	if err != nil {
		return fmt.Errorf("%s: migrate: %w", s.Module, err)
	}
	if applied > s.Latest() {
		return s.newer(applied)
	}
	for _, m := range s.Migrations[applied:] {
		if err := s.apply(ctx, conn, m); err != nil {
			return fmt.Errorf("%s: migration %d (%s): %w", s.Module, m.Version, m.Name, err)
		}
	}
	return nil
}

func (s Set) apply(ctx context.Context, conn *sql.Conn, m Migration) error {
	if s.Flavor == MySQL {
		return runOn(ctx, conn, m.SQL)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := runOn(ctx, tx, m.SQL); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	return tx.Commit()
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// runOn runs schema's statements one by one. Comments (whole lines that
// start with --) are dropped first, so that a semicolon in one does not
// split a statement; a semicolon inside a string literal would, and no
// migration has one.
func runOn(ctx context.Context, db execer, schema string) error {
	for _, stmt := range strings.Split(stripComments(schema), ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

func (s Set) lock(ctx context.Context, conn *sql.Conn) (func() error, error) {
	name := "fxcqrs:" + s.Module + ":" + s.Versions
	switch s.Flavor {
	case PostgreSQL:
		h := fnv.New64a()
		h.Write([]byte(name))
		key := int64(h.Sum64()) //nolint:gosec // any 64 bits name the lock
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
			return nil, err
		}
		return func() error {
			_, err := conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock($1)", key)
			return err
		}, nil
	case MySQL:
		if len(name) > 64 {
			name = name[:64]
		}
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 300)", name).Scan(&got); err != nil {
			return nil, err
		}
		if got.Int64 != 1 {
			return nil, errors.New("another replica held the migration lock for 5 minutes")
		}
		return func() error {
			_, err := conn.ExecContext(context.Background(), "SELECT RELEASE_LOCK(?)", name)
			return err
		}, nil
	}
	return func() error { return nil }, nil // SQLite: Migrate holds sqliteLock
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func appliedOn(ctx context.Context, db querier, quotedVersions string) (int, error) {
	var v sql.NullInt64
	err := db.QueryRowContext(ctx, "SELECT MAX(version) FROM "+quotedVersions).Scan(&v)
	return int(v.Int64), err
}

// Check is what a module does at start: its schema must be at the version
// its code needs. The error names the version table and says what to do.
func (s Set) Check(ctx context.Context, db *sql.DB) error { return s.check(ctx, db) }

// CheckConn is Check on conn, a connection the caller prepared (a
// PostgreSQL search_path set to a tenant's schema).
func (s Set) CheckConn(ctx context.Context, conn *sql.Conn) error { return s.check(ctx, conn) }

func (s Set) check(ctx context.Context, db interface {
	querier
	PingContext(ctx context.Context) error
},
) error {
	applied, err := appliedOn(ctx, db, Quote(s.Flavor == MySQL, s.Versions))
	if err != nil {
		if pingErr := db.PingContext(ctx); pingErr != nil {
			return fmt.Errorf("%s: the database cannot be reached: %w", s.Module, pingErr)
		}
		return fmt.Errorf("%s: table %s cannot be read (%w): the schema was never migrated; run %s.Migrate at deployment, or apply %s.Migrations with your migration tool",
			s.Module, s.Versions, err, s.Module, s.Module)
	}
	switch {
	case applied < s.Latest():
		return fmt.Errorf("%s: the schema is at version %d (table %s), this code needs %d: run %s.Migrate", s.Module, applied, s.Versions, s.Latest(), s.Module)
	case applied > s.Latest():
		return s.newer(applied)
	}
	return nil
}

func (s Set) newer(applied int) error {
	return fmt.Errorf("%s: the schema is at version %d (table %s), newer than this code knows (%d): deploy the newer code, or roll the schema back by hand",
		s.Module, applied, s.Versions, s.Latest())
}

// IndexName derives the name of table's index on what suffix says: the
// two joined when they fit in MaxName, else the table's name cut short
// with a hash of it, so that two long table names never share an index
// name and no index is named like its table.
func IndexName(table, suffix string) string {
	name := table + "_" + suffix
	if len(name) <= MaxName {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(table))
	tag := strconv.FormatUint(uint64(h.Sum32()), 36)
	return table[:MaxName-len(suffix)-len(tag)-2] + "_" + tag + "_" + suffix
}
