package relay_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/internal/sqlspy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// insertTenantRows writes rows of each tenant of rows to topic, in one
// transaction (a pass sees all of them or none), message ids
// <tenant><from> to <tenant><to>.
func insertTenantRows(t *testing.T, db *sql.DB, topic string, rows ...tenantRows) {
	t.Helper()
	tx, err := db.Begin()
	require.NoError(t, err)
	for _, r := range rows {
		for i := r.from; i <= r.to; i++ {
			_, err := tx.Exec("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, ?)",
				topic, fmt.Sprintf("%s%d", r.tenant, i), []byte(`{}`), fmt.Sprintf(`{"tenant":%q}`, r.tenant))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tx.Commit())
}

type tenantRows struct {
	tenant   string
	from, to int
}

// A lane of one tenant is read in one statement per batch: a batch that
// is not full holds every due row, so its tenants need not be asked
// (issue 43: at low load every pass read the lane's tenants, then its
// rows). A full batch still asks, and a quiet tenant waiting behind a
// noisy one's backlog then has its share of the next batch.
func TestAFewRowsOfOneTenantAreOneRead(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	q := schema.NewQueries(d.Dialect, schema.WithDefaults(schema.Tables{}))
	var reads atomic.Int64
	db := sqlspy.Open(d.DB.Driver(), d.DSN, sqlspy.Hooks{Statement: func(query string) {
		if query == q.LaneTenants {
			reads.Add(1)
		}
	}})
	db.SetMaxOpenConns(1) // SQLite: one writer
	t.Cleanup(func() { _ = db.Close() })
	d.DB = db

	clock := outboxtest.NewClock(time.Now())
	pub := &publisher{}
	// Linger -1: the clock stands still, and a linger would wait on it.
	st := lease.Statements{Renew: q.RenewLease, Take: q.TakeLease, Drop: q.DropLease, DropAll: q.DropLeases}
	r := relay.New(relay.Params{
		DB: d.DB, Queries: q, Bus: bus{pub}, Local: noLocal{}, Log: zaptest.NewLogger(t), Config: relay.Config{BatchSize: 4, ProgressInterval: -1, Linger: -1},
		Now: clock.Now, After: clock.After, WallNow: clock.Now, WallAfter: clock.After,
		Leases: lease.NewHolder(d.DB, st, "a", time.Minute, clock.Now),
	})
	r.Start()
	t.Cleanup(func() { _ = r.Close(context.Background()) })

	insertTenantRows(t, db, "orders", tenantRows{"a", 1, 3})
	r.Wrote([]schema.Lane{{Topic: "orders"}})
	eventually(t, func() bool { return len(pub.published()) == 3 }, "a's three rows sent")
	assert.Zero(t, reads.Load(), "batches that were not full: the lane's tenants never read")

	// A backlog of a's fills the batches; b's row commits behind it, in
	// the same transaction: a pass still running from the first wake
	// reads none of them, or all.
	insertTenantRows(t, db, "orders", tenantRows{"a", 4, 20}, tenantRows{"b", 1, 1})
	r.Wrote([]schema.Lane{{Topic: "orders"}})
	require.Eventually(t, func() bool { return len(pub.published()) == 21 }, 10*time.Second, 5*time.Millisecond, "every row sent: %v", pub.published())
	sent := pub.published()[3:]
	assert.Less(t, slices.Index(sent, "b1"), 4, "b's row in the first batch after a's backlog came: %v", sent)
	assert.Positive(t, reads.Load(), "a full batch asks for the lane's tenants")
	require.NoError(t, r.Close(context.Background()))
}
