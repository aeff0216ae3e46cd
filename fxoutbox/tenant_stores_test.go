package fxoutbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatedPublisher publishes through pub while open, and refuses before;
// hook, if set, sees what it publishes first.
type gatedPublisher struct {
	pub  message.Publisher
	open atomic.Bool
	hook atomic.Value // func(topic string, msgs []*message.Message)
}

func (g *gatedPublisher) Publish(topic string, msgs ...*message.Message) error {
	if !g.open.Load() {
		return errors.New("gate closed")
	}
	if hook, ok := g.hook.Load().(func(string, []*message.Message)); ok {
		hook(topic, msgs)
	}
	return g.pub.Publish(topic, msgs...)
}

func (g *gatedPublisher) Close() error { return nil }

// tenantStoresRig is a mediator, a bus over a GoChannel (through a gate,
// open unless closed is set) and an outbox on main with the stores of
// src; PlaceOrder's handler inserts the order in its tenant's orders
// table and emits OrderPlaced, routed to "orders". opts are the
// mediator's further options (more handlers).
type tenantStoresRig struct {
	m       *fxcqrs.Mediator
	outbox  *fxoutbox.Outbox
	gate    *gatedPublisher
	orders  <-chan *message.Message
	handled atomic.Int64
}

func newTenantStoresRig(t *testing.T, main database, src fxoutbox.TenantStores, cfg fxoutbox.Config, closed bool, opts ...fxcqrs.Option) *tenantStoresRig {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024, Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	r := &tenantStoresRig{gate: &gatedPublisher{pub: gc}}
	r.gate.open.Store(!closed)
	r.orders = received(t, gc, "orders")
	bus, err := fxbus.New(fxbus.Config{Publisher: r.gate, Subscriber: gc, Tenants: src},
		[]fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders")}, nil)
	require.NoError(t, err)
	cfg.Dialect, cfg.TenantStores = main.Dialect, src
	if cfg.Relay.PollInterval == 0 {
		cfg.Relay.PollInterval = 200 * time.Millisecond // commits wake the relay: this is for the gate's retries
	}
	if cfg.Relay.RetryMax == 0 {
		cfg.Relay.RetryInitial, cfg.Relay.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	}
	o, err := fxoutbox.New(main.DB, bus, cfg, nil)
	require.NoError(t, err)
	place := commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
		r.handled.Add(1)
		if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, main.Dialect.Rebind("INSERT INTO orders (id, tenant) VALUES (?, ?)"), c.ID, fxbus.TenantOf(ctx)); err != nil {
			return err
		}
		fxcqrs.Emit(ctx, OrderPlaced(c))
		return nil
	})
	m, err := fxcqrs.New(fxcqrs.Config{}, append([]fxcqrs.Option{fxcqrs.WithMiddleware(o.UnitOfWork()), fxcqrs.WithCommandHandlers(place)}, opts...)...)
	require.NoError(t, err)
	o.DeliverTo(m)
	require.NoError(t, o.Start(context.Background()))
	require.NoError(t, bus.Start(context.Background(), m))
	t.Cleanup(func() {
		require.NoError(t, bus.Stop(context.Background()))
		require.NoError(t, m.Stop(context.Background()))
		require.NoError(t, o.Stop(context.Background()))
	})
	r.m, r.outbox = m, o
	return r
}

// tenantStore is one tenant's store in a test, and where to count its
// rows.
type tenantStore struct {
	store fxoutbox.TenantStore
	db    *sql.DB // to count with
	in    string  // the schema to count in: "" the pool's own
}

func (s tenantStore) table(name string) string {
	if s.in == "" {
		return name
	}
	return s.in + "." + name
}

// ordersTable creates the application's orders table in db (schema in,
// if not empty).
func ordersTable(t *testing.T, db *sql.DB, in string) {
	t.Helper()
	name := "orders"
	if in != "" {
		name = in + ".orders"
	}
	_, err := db.Exec("CREATE TABLE " + name + " (id INTEGER PRIMARY KEY, tenant VARCHAR(64) NOT NULL)")
	require.NoError(t, err)
}

// tenantDatabases makes n databases of the test's own on d, each with an
// orders table, as n tenants' stores: a file each on SQLite, a database
// each on MariaDB and on PostgreSQL (created and dropped here).
func tenantDatabases(t *testing.T, d fxoutbox.Dialect, prefix string, n int) []tenantStore {
	t.Helper()
	out := make([]tenantStore, n)
	for i := range out {
		var db *sql.DB
		if d == fxoutbox.PostgreSQL {
			db = postgresDatabase(t)
		} else {
			db = outboxtest.OpenEmpty(t, d).DB
		}
		ordersTable(t, db, "")
		id := fmt.Sprintf("%s%d", prefix, i)
		out[i] = tenantStore{store: fxoutbox.TenantStore{ID: id, DB: db, Dialect: d}, db: db}
	}
	return out
}

// postgresDatabase creates a PostgreSQL database of the test's own (not
// a schema: a database, with a pool of its own) and drops it at the end.
func postgresDatabase(t *testing.T) *sql.DB {
	t.Helper()
	u, err := url.Parse(env("FXCQRS_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
	require.NoError(t, err)
	reachable(t, "FXCQRS_POSTGRES_URL", u.Host)
	name := fmt.Sprintf("fxcqrs_tenant_%d", rand.Uint64()%1_000_000_000_000)
	server, err := sql.Open("pgx", u.String())
	require.NoError(t, err)
	_, err = server.Exec("CREATE DATABASE " + name)
	require.NoError(t, err)
	u.Path = "/" + name
	db, err := sql.Open("pgx", u.String())
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = db.Close()
		_, _ = server.Exec("DROP DATABASE " + name + " WITH (FORCE)")
		_ = server.Close()
	})
	return db
}

// tenantSchemas makes n PostgreSQL schemas in main's database, each with
// an orders table, as n tenants' stores, dropped at the end.
func tenantSchemas(t *testing.T, main database, prefix string, n int) []tenantStore {
	t.Helper()
	suffix := rand.Uint64() % 1_000_000_000
	out := make([]tenantStore, n)
	for i := range out {
		name := fmt.Sprintf("fxt_%d_%d", suffix, i)
		_, err := main.DB.Exec("CREATE SCHEMA " + name)
		require.NoError(t, err)
		t.Cleanup(func() { _, _ = main.DB.Exec("DROP SCHEMA " + name + " CASCADE") })
		ordersTable(t, main.DB, name)
		out[i] = tenantStore{store: fxoutbox.TenantStore{ID: fmt.Sprintf("%s%d", prefix, i), Schema: name}, db: main.DB, in: name}
	}
	return out
}

func storesOf(ts []tenantStore) []fxoutbox.TenantStore {
	out := make([]fxoutbox.TenantStore, len(ts))
	for i, s := range ts {
		out[i] = s.store
	}
	return out
}

// tenantLayouts is each database's layout of tenants' stores the tests
// run on: PostgreSQL with 50 schemas and 3 databases, MariaDB with 3
// databases, SQLite with 3 files.
func tenantLayouts(t *testing.T, test func(t *testing.T, main database, tenants []tenantStore)) {
	t.Helper()
	for _, d := range outboxtest.Dialects {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel()
			main := openDatabase(t, d)
			ordersTable(t, main.DB, "")
			var tenants []tenantStore
			if d == fxoutbox.PostgreSQL {
				tenants = append(tenantSchemas(t, main, "s", 50), tenantDatabases(t, d, "db", 3)...)
			} else {
				tenants = tenantDatabases(t, d, "db", 3)
			}
			test(t, main, tenants)
		})
	}
}

// On each layout: first, a call under a tenant the stores do not know
// (an injection, a 10 KB id, an unknown one, a blank) is refused with
// ErrUnknownTenant before anything begins: no handler runs, no row is
// written anywhere, and InTenant and AdminOf refuse them too. Then
// commands for every tenant, and for the default tenant: each order and
// each outbox row is written in its own tenant's store and in no other's
// (the relay is held back by a closed gate until they are counted), and
// every event is then relayed, with its tenant, and the outboxes empty.
func TestTenantStores(t *testing.T) {
	t.Parallel()
	tenantLayouts(t, func(t *testing.T, main database, tenants []tenantStore) {
		src := &outboxtest.TenantSource{}
		src.Set(storesOf(tenants)...)
		r := newTenantStoresRig(t, main, src, fxoutbox.Config{}, true)
		ctx := context.Background()
		all := append([]tenantStore{{db: main.DB}}, tenants...) // the default tenant first
		assert.Equal(t, append([]string{""}, idsOf(tenants)...), r.outbox.Tenants())

		for _, bad := range []string{`x"; DROP SCHEMA public CASCADE; --`, strings.Repeat("t", 10_000), "nobody", " "} {
			err := fxcqrs.Exec(fxbus.WithTenant(ctx, bad), r.m, PlaceOrder{ID: 1})
			require.ErrorIs(t, err, fxbus.ErrUnknownTenant)
			assert.Less(t, len(err.Error()), 400, "the id is cut in the error")
			ran := false
			require.ErrorIs(t, r.outbox.InTenant(ctx, bad, func(context.Context) error { ran = true; return nil }), fxbus.ErrUnknownTenant)
			assert.False(t, ran)
			_, err = r.outbox.AdminOf(bad)
			require.ErrorIs(t, err, fxbus.ErrUnknownTenant)
		}
		assert.Zero(t, r.handled.Load())
		for _, ts := range all {
			assert.Zero(t, count(t, ts.db, "SELECT COUNT(*) FROM "+ts.table("orders")))
			assert.Zero(t, count(t, ts.db, "SELECT COUNT(*) FROM "+ts.table("fxcqrs_outbox")))
		}
		if main.Dialect == fxoutbox.PostgreSQL {
			assert.Equal(t, 1, count(t, main.DB, "SELECT COUNT(*) FROM pg_namespace WHERE nspname = 'public'"))
		}

		for i, ts := range all {
			require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(ctx, ts.store.ID), r.m, PlaceOrder{ID: 100 + i}), "tenant %q", ts.store.ID)
		}
		for i, ts := range all {
			assert.Equal(t, 1, count(t, ts.db, "SELECT COUNT(*) FROM "+ts.table("orders")), "tenant %q", ts.store.ID)
			assert.Equal(t, 1, count(t, ts.db, fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE id = %d", ts.table("orders"), 100+i)), "tenant %q", ts.store.ID)
			assert.Equal(t, 1, count(t, ts.db, "SELECT COUNT(*) FROM "+ts.table("fxcqrs_outbox")), "tenant %q", ts.store.ID)
		}

		r.gate.open.Store(true)
		got := map[string]int{}
		for range all {
			msg := next(t, r.orders)
			var e OrderPlaced
			require.NoError(t, json.Unmarshal(msg.Payload, &e))
			got[msg.Metadata.Get(fxbus.MetadataTenant)] = e.ID
		}
		for i, ts := range all {
			assert.Equal(t, 100+i, got[ts.store.ID], "tenant %q", ts.store.ID)
		}
		r.emptied(t, all...)
	})
}

// receiveUntil hands each order the rig's consumer gets to receive until
// done, failing with format and args if that takes longer than within.
func (r *tenantStoresRig) receiveUntil(t *testing.T, within time.Duration, done func() bool, receive func(*message.Message), format string, args ...any) {
	t.Helper()
	deadline := time.After(within)
	for !done() {
		select {
		case msg := <-r.orders:
			receive(msg)
		case <-deadline:
			t.Fatalf(format, args...)
		}
	}
}

// emptied waits until the outbox of each of stores is empty: every row
// relayed and deleted.
func (r *tenantStoresRig) emptied(t *testing.T, stores ...tenantStore) {
	t.Helper()
	for _, ts := range stores {
		adm, err := r.outbox.AdminOf(ts.store.ID)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			b, err := adm.Backlog(context.Background())
			return err == nil && len(b) == 0
		}, time.Minute, 5*time.Millisecond, "tenant %q's outbox is not emptied", ts.store.ID)
	}
}

func idsOf(ts []tenantStore) []string {
	out := make([]string, len(ts))
	for i, s := range ts {
		out[i] = s.store.ID
	}
	return out
}
