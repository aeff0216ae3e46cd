package fxoutbox_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// execAll runs statements separated by semicolons, comment lines dropped.
func execAll(t *testing.T, d database, schema string) {
	t.Helper()
	var kept []string
	for _, line := range strings.Split(schema, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			kept = append(kept, line)
		}
	}
	for _, stmt := range strings.Split(strings.Join(kept, "\n"), ";") {
		if strings.TrimSpace(stmt) != "" {
			_, err := d.DB.Exec(stmt)
			require.NoError(t, err, stmt)
		}
	}
}

// unversioned is the schema as the Migrate of before versions created it:
// the first migration without its bookkeeping.
func unversioned(t *testing.T, d fxoutbox.Dialect) string {
	t.Helper()
	ms, err := fxoutbox.Migrations(d, fxoutbox.Tables{})
	require.NoError(t, err)
	var kept []string
	for _, line := range strings.Split(ms[0].SQL, "\n") {
		if !strings.Contains(line, "fxcqrs_outbox_migrations") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

func newOutbox(t *testing.T, d database, cfg fxoutbox.Config) *fxoutbox.Outbox {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: gc}, nil, nil)
	require.NoError(t, err)
	cfg.Dialect = d.Dialect
	o, err := fxoutbox.New(d.DB, bus, cfg, nil)
	require.NoError(t, err)
	return o
}

// A deployment that the unversioned Migrate created upgrades: its rows
// stay, the inbox's records get their time by the code's clock from
// handled_at, and a second Migrate changes nothing.
func TestMigrateUpgradesTheUnversionedSchema(t *testing.T) {
	t.Parallel()
	outboxtest.ForEachEmpty(t, func(t *testing.T, d database) {
		ctx := context.Background()
		execAll(t, d, unversioned(t, d.Dialect))
		_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_inbox (handler, message_id) VALUES (?, ?)"), "h", "m1")
		require.NoError(t, err)
		require.ErrorContains(t, fxoutbox.CheckSchema(ctx, d.DB, d.Dialect, fxoutbox.Tables{}), "never migrated")

		require.NoError(t, fxoutbox.Migrate(ctx, d.DB, d.Dialect, fxoutbox.Tables{}))
		require.NoError(t, fxoutbox.CheckSchema(ctx, d.DB, d.Dialect, fxoutbox.Tables{}))
		var handled int64
		require.NoError(t, d.DB.QueryRow("SELECT handled_ns FROM fxcqrs_inbox").Scan(&handled))
		assert.InDelta(t, time.Now().UnixNano(), handled, float64(24*time.Hour), "handled_ns from handled_at")
		ms, err := fxoutbox.Migrations(d.Dialect, fxoutbox.Tables{})
		require.NoError(t, err)
		assert.Equal(t, len(ms), count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_migrations"))

		require.NoError(t, fxoutbox.Migrate(ctx, d.DB, d.Dialect, fxoutbox.Tables{}), "again")
		assert.Equal(t, len(ms), count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_migrations"))
	})
}

// Replicas that run Migrate at once each succeed, and each migration is
// applied once: without the lock, the second ALTER TABLE fails.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	outboxtest.ForEachEmpty(t, func(t *testing.T, d database) {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = fxoutbox.Migrate(context.Background(), d.DB, d.Dialect, fxoutbox.Tables{}) })
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		ms, err := fxoutbox.Migrations(d.Dialect, fxoutbox.Tables{})
		require.NoError(t, err)
		assert.Equal(t, len(ms), count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_migrations"))
	})
}

// The outbox checks its schema at start and says what to do.
func TestStartChecksTheSchema(t *testing.T) {
	t.Parallel()
	outboxtest.ForEachEmpty(t, func(t *testing.T, d database) {
		ctx := context.Background()
		err := newOutbox(t, d, fxoutbox.Config{}).Start(ctx)
		require.ErrorContains(t, err, "table fxcqrs_outbox_migrations cannot be read")
		require.ErrorContains(t, err, "run fxoutbox.Migrate")

		require.NoError(t, fxoutbox.Migrate(ctx, d.DB, d.Dialect, fxoutbox.Tables{}))
		_, err = d.DB.Exec("INSERT INTO fxcqrs_outbox_migrations (version, name, applied_at) VALUES (99, 'future', 'x')")
		require.NoError(t, err)
		require.ErrorContains(t, newOutbox(t, d, fxoutbox.Config{}).Start(ctx), "newer than this code knows")

		_, err = d.DB.Exec("DELETE FROM fxcqrs_outbox_migrations WHERE version > 1")
		require.NoError(t, err)
		require.ErrorContains(t, newOutbox(t, d, fxoutbox.Config{}).Start(ctx), "the schema is at version 1")
	})
}

// indexes counts the indexes of table whose first column is column.
func indexes(t *testing.T, d database, table, column string) int {
	t.Helper()
	switch d.Dialect {
	case fxoutbox.PostgreSQL:
		return count(t, d.DB, fmt.Sprintf(
			`SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND tablename = '%s' AND indexdef LIKE '%%(%s%%'`, table, column))
	case fxoutbox.MySQL:
		return count(t, d.DB, fmt.Sprintf(
			`SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = '%s' AND column_name = '%s' AND seq_in_index = 1`, table, column))
	}
	return count(t, d.DB, fmt.Sprintf(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = '%s' AND sql LIKE '%%(%s%%'`, table, column))
}

// Table names at the limit migrate on every database, with every index.
func TestLongTableNames(t *testing.T) {
	t.Parallel()
	long := func(tag string) string { return strings.Repeat("x", 60) + tag }
	tables := fxoutbox.Tables{Outbox: long("out"), DeadLetters: long("ded"), Leases: long("lea"), Inbox: long("inb"), Migrations: long("mig")}
	outboxtest.ForEachEmpty(t, func(t *testing.T, d database) {
		require.Len(t, tables.Outbox, 63)
		require.NoError(t, fxoutbox.Migrate(context.Background(), d.DB, d.Dialect, tables))
		require.NoError(t, fxoutbox.CheckSchema(context.Background(), d.DB, d.Dialect, tables))
		assert.Equal(t, 2, indexes(t, d, tables.Outbox, "topic"), "the (topic, lane, id) and (topic, lane, msg_tenant, id) indexes")
		assert.Equal(t, 1, indexes(t, d, tables.Inbox, "handled_ns"), "the inbox's clean-up index")
	})
}

// Two roles cannot share a table, nor take another module's.
func TestTableNamesCollide(t *testing.T) {
	t.Parallel()
	_, err := fxoutbox.Schema(fxoutbox.PostgreSQL, fxoutbox.Tables{Outbox: "x", DeadLetters: "x"})
	require.ErrorContains(t, err, `tables Outbox and DeadLetters are both named "x"`)
	_, err = fxoutbox.Schema(fxoutbox.SQLite, fxoutbox.Tables{Leases: "fxcqrs_sagas"})
	require.ErrorContains(t, err, `table Leases is named "fxcqrs_sagas", which another fxcqrs module uses`)
	_, err = fxoutbox.Schema(fxoutbox.MySQL, fxoutbox.Tables{Inbox: strings.Repeat("i", 64)})
	require.ErrorContains(t, err, "63 at most")
}

// clock is a settable time for the outbox.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

// The inbox keeps its records for InboxRetention by the outbox's clock,
// then deletes them in bounded batches, in the background too.
func TestInboxRetention(t *testing.T) {
	t.Parallel()
	outboxtest.ForEach(t, func(t *testing.T, d database) {
		ctx := context.Background()
		clk := &clock{now: time.Unix(1_800_000_000, 0)}
		insert := func(n int, at time.Time) {
			tx, err := d.DB.Begin()
			require.NoError(t, err)
			for i := range n {
				_, err := tx.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_inbox (handler, message_id, handled_ns) VALUES (?, ?, ?)"),
					"h", fmt.Sprintf("%d-%d", at.Unix(), i), at.UnixNano())
				require.NoError(t, err)
			}
			require.NoError(t, tx.Commit())
		}
		insert(2500, clk.Now().Add(-8*24*time.Hour)) // older than the default 7 days
		insert(10, clk.Now().Add(-6*24*time.Hour))
		o := newOutbox(t, d, fxoutbox.Config{Now: clk.Now})
		n, err := o.CleanInbox(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(2500), n, "three batches")
		assert.Equal(t, 10, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"))

		// In the background: the relay cleans when it starts.
		clk.Set(clk.Now().Add(2 * 24 * time.Hour))
		require.NoError(t, o.Start(ctx))
		t.Cleanup(func() { require.NoError(t, o.Stop(ctx)) })
		require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox") == 0 },
			time.Minute, 5*time.Millisecond, "the relay cleaned the inbox")
	})
}

// A relay whose statements the database itself refuses (a table dropped
// under it) says so at error level, not "broker unavailable".
func TestRelaySaysTheDatabaseRefused(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	core, logs := observer.New(zapcore.WarnLevel)
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: gc}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{PollInterval: 5 * time.Millisecond}}, zap.New(core))
	require.NoError(t, err)
	require.NoError(t, o.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })
	_, err = d.DB.Exec("DROP TABLE fxcqrs_outbox")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return logs.FilterMessageSnippet("the database refused a statement").FilterLevelExact(zapcore.ErrorLevel).Len() > 0
	}, time.Minute, 5*time.Millisecond)
	assert.Zero(t, logs.FilterMessageSnippet("the broker is unavailable").Len())
}

// A schema at its version is not migrated again, and its Migrate takes no
// lock: a replica's start, or a tenant store's, does not queue behind
// another's migration holding the lock (the key below is the one
// internal/sqlschema names the lock by).
func TestMigrateAtItsVersionTakesNoLock(t *testing.T) {
	t.Parallel()
	d := outboxtest.Open(t, fxoutbox.PostgreSQL)
	ctx := context.Background()
	held, err := d.DB.Conn(ctx)
	require.NoError(t, err)
	defer held.Close()
	h := fnv.New64a()
	h.Write([]byte("fxcqrs:fxoutbox:fxcqrs_outbox_migrations"))
	key := int64(h.Sum64()) //nolint:gosec // the lock's name, as sqlschema makes it
	_, err = held.ExecContext(ctx, "SELECT pg_advisory_lock($1)", key)
	require.NoError(t, err)
	defer func() { _, _ = held.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", key) }()

	// The deadline bounds a Migrate that waits for the lock: it never
	// ends otherwise.
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, fxoutbox.Migrate(wait, d.DB, fxoutbox.PostgreSQL, fxoutbox.Tables{}), "a schema at its version waited for the lock")
}
