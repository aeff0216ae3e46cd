package fxoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tenantRows writes, by SQL, rows of the tenant (its metadata's "tenant";
// "" writes none: the default tenant) into d's outbox tables.
type tenantRows struct {
	t *testing.T
	d database
}

func (w tenantRows) exec(query string, args ...any) {
	w.t.Helper()
	if w.d.Dialect == fxoutbox.PostgreSQL {
		for i := 1; strings.Contains(query, "?"); i++ {
			query = strings.Replace(query, "?", fmt.Sprintf("$%d", i), 1)
		}
	}
	_, err := w.d.DB.Exec(query, args...)
	require.NoError(w.t, err)
}

func tenantMeta(tenant string) string {
	if tenant == "" {
		return `{"name":"OrderPlaced"}`
	}
	return fmt.Sprintf(`{"name":"OrderPlaced",%q:%q}`, fxbus.MetadataTenant, tenant)
}

// dead writes an outbox dead letter, id, of tenant on topic.
func (w tenantRows) dead(id int, topic, tenant string) {
	w.t.Helper()
	w.exec("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
		id, topic, fmt.Sprintf("m-%d", id), []byte(`{}`), tenantMeta(tenant), "refused", time.Now().UnixNano()+int64(id))
}

// waiting writes a row waiting in the outbox.
func (w tenantRows) waiting(topic, tenant string) {
	w.t.Helper()
	w.exec("INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata, created_ns) VALUES (?, 0, ?, ?, ?, ?)",
		topic, "w-"+tenant, []byte(`{}`), tenantMeta(tenant), time.Now().UnixNano())
}

// scheduled writes a scheduled row, due in an hour.
func (w tenantRows) scheduled(topic, tenant string) {
	w.t.Helper()
	w.exec("INSERT INTO fxcqrs_outbox_scheduled (due_ns, topic, message_id, payload, metadata) VALUES (?, ?, ?, ?, ?)",
		time.Now().Add(time.Hour).UnixNano(), topic, "s-"+tenant, []byte(`{}`), tenantMeta(tenant))
}

// parkForTenant records an inbound dead letter of tenant that parks key on topic.
func parkForTenant(t *testing.T, admin *fxoutbox.Admin, topic, key, tenant string) {
	t.Helper()
	msg := message.NewMessage("p-"+tenant, []byte(`{}`))
	msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
	if tenant != "" {
		msg.Metadata.Set(fxbus.MetadataTenant, tenant)
	}
	require.NoError(t, admin.RecordParked(context.Background(), topic, key, msg, errors.New("the ledger is down")))
}

func tenantPtr(s string) *string { return &s }

func letterIDs(letters []fxoutbox.DeadLetter) []int64 {
	out := make([]int64, len(letters))
	for i, l := range letters {
		out[i] = l.ID
	}
	return out
}

// The repair tools per tenant, in the shared mode: the dead letters
// filtered by tenant (the default tenant apart from every tenant); an
// Admin for one tenant reads that tenant's letters, backlog, schedules,
// parked keys and repairs, and its repairs leave every other tenant's
// rows as they were, though asked for them by id; every repair is
// recorded with the tenant of what it repaired, once per tenant; a
// replayed letter keeps its tenant.
func TestAdminPerTenant(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, nil)
		require.NoError(t, err)
		w := tenantRows{t, d}
		w.dead(1, "orders", "acme")
		w.dead(2, "orders", "globex")
		w.dead(3, "orders", "")
		w.waiting("orders", "acme")
		w.waiting("orders", "globex")
		w.scheduled("orders", "acme")
		parkForTenant(t, admin, "in", "k", "acme")
		parkForTenant(t, admin, "in", "k", "globex")

		all, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{})
		require.NoError(t, err)
		assert.Len(t, all, 5, "no tenant selected: every tenant's")
		acmeLetters, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Tenant: tenantPtr("acme")})
		require.NoError(t, err)
		require.Len(t, acmeLetters, 2)
		for _, l := range acmeLetters {
			assert.Equal(t, "acme", l.Tenant)
		}
		defaults, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Tenant: tenantPtr("")})
		require.NoError(t, err)
		assert.Equal(t, []int64{3}, letterIDs(defaults), "the default tenant's alone")
		n, err := admin.CountDead(ctx, fxoutbox.DeadLetterFilter{Tenant: tenantPtr("globex")})
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		tenants, err := admin.Tenants(ctx)
		require.NoError(t, err)
		assert.Equal(t, []string{"", "acme", "globex"}, tenants)

		acme := admin.ForTenant("acme")
		got, err := acme.ListDead(ctx, fxoutbox.DeadLetterFilter{})
		require.NoError(t, err)
		assert.Equal(t, letterIDs(acmeLetters), letterIDs(got))
		got, err = acme.ListDead(ctx, fxoutbox.DeadLetterFilter{Tenant: tenantPtr("globex")})
		require.NoError(t, err)
		assert.Empty(t, got, "an Admin for acme shows none of globex's")
		_, err = acme.Dead(ctx, 2)
		require.Error(t, err, "globex's letter, by id")
		backlog, err := acme.Backlog(ctx)
		require.NoError(t, err)
		require.Len(t, backlog, 1)
		assert.Equal(t, 1, backlog[0].Rows)
		sched, err := acme.Scheduled(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, sched.Rows)
		sched, err = admin.ForTenant("globex").Scheduled(ctx)
		require.NoError(t, err)
		assert.Zero(t, sched.Rows)
		counts, err := acme.DeadLetters(ctx)
		require.NoError(t, err)
		assert.Len(t, counts, 2, "orders and in")
		for _, c := range counts {
			assert.Equal(t, 1, c.Rows, c.Topic)
		}
		keys, err := acme.ParkedKeys(ctx, "in")
		require.NoError(t, err)
		assert.Equal(t, []fxbus.ParkedKey{{Tenant: "acme", Key: "k"}}, keys)
		globexParked, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Tenant: tenantPtr("globex"), Topic: "in"})
		require.NoError(t, err)
		require.Len(t, globexParked, 1)

		// acme's repairs, asked for globex's letters too: only acme's move.
		n, err = acme.Replay(ctx, []int64{1, 2, globexParked[0].ID}, "ops", "the broker is back")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "acme's letter alone")
		n, err = acme.Discard(ctx, []int64{2, 3}, "ops", "not acme's")
		require.NoError(t, err)
		assert.Zero(t, n)
		n, err = acme.Release(ctx, "in", "k", "ops", "the ledger is back")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "acme's parked letter of the key alone")
		globexLetters, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Tenant: tenantPtr("globex")})
		require.NoError(t, err)
		assert.Len(t, globexLetters, 2, "globex's letters stay")
		for _, l := range globexLetters {
			assert.True(t, l.Released.IsZero() && l.Discarded.IsZero(), "globex's %d untouched", l.ID)
		}
		backlog, err = acme.Backlog(ctx)
		require.NoError(t, err)
		require.Len(t, backlog, 2, "orders, and in (the release)")
		for _, b := range backlog {
			assert.Equal(t, map[string]int{"orders": 2, "in": 1}[b.Topic], b.Rows, "the replays keep their tenant: %s", b.Topic)
		}

		// Every tenant's Admin repairs several tenants at once: recorded
		// once per tenant.
		n, err = admin.Discard(ctx, []int64{2, 3}, "ops", "test orders")
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		repairs, err := admin.Repairs(ctx, 10)
		require.NoError(t, err)
		require.Len(t, repairs, 4)
		type rec struct{ Action, Target, Tenant string }
		var recs []rec
		for _, r := range repairs {
			recs = append(recs, rec{r.Action, r.Target, r.Tenant})
		}
		assert.ElementsMatch(t, []rec{
			{"discard", "dead letters 2", "globex"},
			{"discard", "dead letters 3", ""},
		}, recs[:2])
		assert.Equal(t, rec{"replay", fmt.Sprintf("dead letters %d", acmeInboundID(acmeLetters)), "acme"}, recs[2], "the release")
		assert.Equal(t, rec{"replay", "dead letters 1", "acme"}, recs[3])
		acmeRepairs, err := acme.Repairs(ctx, 10)
		require.NoError(t, err)
		assert.Len(t, acmeRepairs, 2, "acme's repairs alone")
		defaultRepairs, err := admin.ForTenant("").Repairs(ctx, 10)
		require.NoError(t, err)
		require.Len(t, defaultRepairs, 1)
		assert.Equal(t, "dead letters 3", defaultRepairs[0].Target)
	})
}

// acmeInboundID is the id of the inbound letter among letters.
func acmeInboundID(letters []fxoutbox.DeadLetter) int64 {
	for _, l := range letters {
		if l.Inbound {
			return l.ID
		}
	}
	return 0
}
