package crashtest_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/stretchr/testify/require"

	_ "modernc.org/sqlite"
)

// The crash test as docs/testing.md shows it, on a stand-in for an
// application: each order, its delivery and its effect commit together,
// so that whatever moment the SIGKILL falls on, the promises hold. A
// service's own crash test starts its application in the child instead.
//
// A test, not an Example with // Output:: the harness takes the test's
// testing.TB, which an Example does not get, and starts each child by
// running this test binary again with -test.run naming a Test function;
// what it logs (the seed, the kill moments) differs every run.
//
// snippet:crash
func TestExampleCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	crashtest.Harness{
		Child: "TestExampleCrashChild", Env: map[string]string{"APP_DB": path},
		Rounds: 3, MinUp: 50 * time.Millisecond, MaxUp: 150 * time.Millisecond,
	}.Run(t) // 3 children killed at random moments (the log gives the seed), then one drains

	db, err := sql.Open("sqlite", "file:"+path)
	require.NoError(t, err)
	defer db.Close() //nolint:errcheck // a test
	report, err := crashtest.CheckOutbox(context.Background(), db, crashtest.Promises{
		Committed:  "SELECT id FROM orders",
		Deliveries: "SELECT order_id FROM deliveries",
		Effects:    "SELECT order_id FROM effects",
	})
	require.NoError(t, err) // every committed order delivered, none invented, each effect once
	t.Logf("%+v", report)
}

func TestExampleCrashChild(t *testing.T) {
	if crashtest.Mode() == "" {
		t.Skip("started by TestExampleCrash only")
	}
	db, err := sql.Open("sqlite", "file:"+os.Getenv("APP_DB")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	defer db.Close() //nolint:errcheck // a test
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)",
		"CREATE TABLE IF NOT EXISTS deliveries (order_id INTEGER)",
		"CREATE TABLE IF NOT EXISTS effects (order_id INTEGER)",
	} {
		_, err := db.Exec(q)
		require.NoError(t, err)
	}
	if crashtest.Mode() == crashtest.Drain {
		return // nothing in flight in this stand-in; an application waits for its outbox to empty
	}
	crashtest.Ready()
	for { // the workload, until killed
		tx, err := db.Begin()
		require.NoError(t, err)
		var id int
		require.NoError(t, tx.QueryRow("SELECT COALESCE(MAX(id), 0) + 1 FROM orders").Scan(&id))
		for _, q := range []string{"INSERT INTO orders (id) VALUES (?)", "INSERT INTO deliveries VALUES (?)", "INSERT INTO effects VALUES (?)"} {
			_, err := tx.Exec(q, id)
			require.NoError(t, err)
		}
		require.NoError(t, tx.Commit())
	}
}

// end snippet
