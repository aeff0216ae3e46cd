package crashtest_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"
)

// Each round's child is killed while it works (it never returns), then
// the drain child runs to its end; each appends what it is to a file.
func TestHarness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	crashtest.Harness{
		Child: "TestHarnessChild", Env: map[string]string{"CRASHTEST_LOG": path},
		Rounds: 3, MinUp: 100 * time.Millisecond, MaxUp: 150 * time.Millisecond,
	}.Run(t)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"work 1", "work 2", "work 3", "drain 0"}, strings.Split(strings.TrimSpace(string(data)), "\n"))
}

func TestHarnessChild(t *testing.T) {
	if crashtest.Mode() == "" {
		t.Skip("started by TestHarness only")
	}
	f, err := os.OpenFile(os.Getenv("CRASHTEST_LOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	_, err = fmt.Fprintf(f, "%s %d\n", crashtest.Mode(), crashtest.Round())
	require.NoError(t, err)
	require.NoError(t, f.Close())
	if crashtest.Mode() == crashtest.Work {
		crashtest.Ready()
		select {} // until killed
	}
}

// The outbox's promises, checked on what a run left: kept, and each kind
// of break named.
func TestCheckOutbox(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	for _, q := range []string{
		"CREATE TABLE orders (id INTEGER)", "CREATE TABLE deliveries (order_id INTEGER)", "CREATE TABLE effects (order_id INTEGER)",
		"INSERT INTO orders VALUES (1), (2), (3)",
		"INSERT INTO deliveries VALUES (1), (2), (2), (3)",
		"INSERT INTO effects VALUES (1), (2), (3)",
	} {
		_, err := db.Exec(q)
		require.NoError(t, err)
	}
	p := crashtest.Promises{Committed: "SELECT id FROM orders", Deliveries: "SELECT order_id FROM deliveries", Effects: "SELECT order_id FROM effects"}
	r, err := crashtest.CheckOutbox(context.Background(), db, p)
	require.NoError(t, err)
	assert.Equal(t, crashtest.Report{Committed: 3, Delivered: 3, Duplicates: 1, Effects: 3}, r)

	for _, q := range []string{
		"DELETE FROM deliveries WHERE order_id = 3", // lost
		"INSERT INTO deliveries VALUES (9)",         // of a rolled-back transaction
		"INSERT INTO effects VALUES (1)",            // twice
	} {
		_, err := db.Exec(q)
		require.NoError(t, err)
	}
	_, err = crashtest.CheckOutbox(context.Background(), db, p)
	require.Error(t, err)
	for _, want := range []string{"3 committed, and was never delivered", "9 was delivered, and never committed", "1 committed, and had its effect 2 times"} {
		assert.ErrorContains(t, err, want)
	}
}

// Ids of any type: text ids, as a service whose keys are UUIDs or codes
// has, and an integer id compared with its text in another table.
func TestCheckOutboxTextIDs(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "c.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	for _, q := range []string{
		"CREATE TABLE bookings (id TEXT)", "CREATE TABLE deliveries (booking_id TEXT)", "CREATE TABLE effects (booking_id BLOB)",
		"INSERT INTO bookings VALUES ('b-1'), ('b-2')",
		"INSERT INTO deliveries VALUES ('b-1'), ('b-2'), ('b-2')",
		"INSERT INTO effects VALUES (CAST('b-1' AS BLOB)), (CAST('b-2' AS BLOB))",
	} {
		_, err := db.Exec(q)
		require.NoError(t, err)
	}
	p := crashtest.Promises{Committed: "SELECT id FROM bookings", Deliveries: "SELECT booking_id FROM deliveries", Effects: "SELECT booking_id FROM effects"}
	r, err := crashtest.CheckOutbox(context.Background(), db, p)
	require.NoError(t, err)
	assert.Equal(t, crashtest.Report{Committed: 2, Delivered: 2, Duplicates: 1, Effects: 2}, r)

	_, err = db.Exec("INSERT INTO deliveries VALUES ('b-9')")
	require.NoError(t, err)
	_, err = crashtest.CheckOutbox(context.Background(), db, p)
	assert.ErrorContains(t, err, "b-9 was delivered, and never committed")

	_, err = crashtest.CheckOutbox(context.Background(), db, crashtest.Promises{Committed: "SELECT NULL", Deliveries: p.Deliveries, Effects: p.Effects})
	assert.ErrorContains(t, err, "a NULL id")
}
