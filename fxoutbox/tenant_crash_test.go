package fxoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrstest/crashtest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The crash test across tenants' stores: a process (this test binary,
// re-executed) runs commands for three tenants in turn, each in its own
// store (a SQLite file; a PostgreSQL schema), while its one relay sends
// every store's rows to the in-process broker and its subscription
// handles them, with the inbox, in the message's tenant's store; it is
// SIGKILLed at random moments, restarted, and finally left to drain.
// Afterwards, in each tenant's store: every committed order was
// delivered, no rolled-back one ever was, each effect happened once, and
// no store holds another tenant's order, effect or delivery.
func TestTenantCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test kills processes; not with -short")
	}
	t.Parallel()
	for _, dialect := range []fxoutbox.Dialect{fxoutbox.SQLite, fxoutbox.PostgreSQL} {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			tenantCrash(t, dialect)
		})
	}
}

const crashTenants = 3

func tenantCrash(t *testing.T, dialect fxoutbox.Dialect) {
	main := openDatabase(t, dialect)
	ordersTable(t, main.DB, "")
	var (
		tenants []tenantStore
		specs   []string // how the child finds each store
	)
	if dialect == fxoutbox.PostgreSQL {
		tenants = tenantSchemas(t, main, "t", crashTenants)
		for _, ts := range tenants {
			specs = append(specs, "schema:"+ts.store.Schema)
		}
	} else {
		for i := range crashTenants {
			db := outboxtest.OpenEmpty(t, dialect)
			ordersTable(t, db.DB, "")
			tenants = append(tenants, tenantStore{store: fxoutbox.TenantStore{ID: fmt.Sprintf("t%d", i), DB: db.DB}, db: db.DB})
			specs = append(specs, "dsn:"+db.DSN)
		}
	}
	for _, ts := range tenants {
		for _, ddl := range []string{
			"CREATE TABLE " + ts.table("effects") + " (order_id BIGINT NOT NULL)",
			"CREATE TABLE " + ts.table("deliveries") + " (order_id BIGINT NOT NULL)",
		} {
			_, err := ts.db.Exec(ddl)
			require.NoError(t, err)
		}
	}
	require.NoError(t, fxoutbox.MigrateAll(context.Background(), main.DB, fxoutbox.StaticTenantStores(storesOf(tenants)...), dialect, fxoutbox.Tables{}, nil))
	crashtest.Harness{Child: "TestTenantCrashChild", Rounds: 3, MinUp: 300 * time.Millisecond, MaxUp: 800 * time.Millisecond, Env: map[string]string{
		"FXCQRS_CRASH_DIALECT": dialect.String(),
		"FXCQRS_CRASH_DSN":     main.DSN,
		"FXCQRS_CRASH_DRIVER":  main.Driver,
		"FXCQRS_CRASH_TENANTS": strings.Join(specs, ","),
	}}.Run(t)

	total := 0
	for i, ts := range tenants {
		committed := ids(t, ts.db, "SELECT id FROM "+ts.table("orders"))
		require.NotEmpty(t, committed, "tenant %s", ts.store.ID)
		for _, q := range []string{"orders", "effects", "deliveries"} {
			col := "order_id"
			if q == "orders" {
				col = "id"
			}
			for _, id := range ids(t, ts.db, "SELECT "+col+" FROM "+ts.table(q)) {
				require.Equal(t, int64(i), (id%1_000_000)%crashTenants, "tenant %s's %s holds order %d, another tenant's", ts.store.ID, q, id)
				require.NotZero(t, id%5, "order %d was to roll back", id)
			}
		}
		report, err := crashtest.CheckOutbox(context.Background(), ts.db, crashtest.Promises{
			Committed: "SELECT id FROM " + ts.table("orders"), Deliveries: "SELECT order_id FROM " + ts.table("deliveries"),
			Effects: "SELECT order_id FROM " + ts.table("effects"),
		})
		require.NoError(t, err, "tenant %s", ts.store.ID)
		assert.Zero(t, count(t, ts.db, "SELECT COUNT(*) FROM "+ts.table("fxcqrs_outbox")), "tenant %s's outbox drained", ts.store.ID)
		total += report.Committed
		t.Logf("tenant %s: %d orders committed, %d delivered, %d raw duplicates, %d effects", ts.store.ID, report.Committed, report.Delivered, report.Duplicates, report.Effects)
	}
	assert.Zero(t, count(t, main.DB, "SELECT COUNT(*) FROM orders"), "no order in the default store")
	t.Logf("3 kills, %d tenants: %d orders committed", crashTenants, total)
}

// TestTenantCrashChild is the process of TestTenantCrash; it does
// nothing unless TestTenantCrash started it.
func TestTenantCrashChild(t *testing.T) {
	mode := crashtest.Mode()
	if mode == "" || os.Getenv("FXCQRS_CRASH_TENANTS") == "" {
		t.Skip("started by TestTenantCrash only")
	}
	dialect := map[string]fxoutbox.Dialect{"postgresql": fxoutbox.PostgreSQL, "sqlite": fxoutbox.SQLite}[os.Getenv("FXCQRS_CRASH_DIALECT")]
	open := func(dsn string) database {
		db, err := outboxtest.Database{Dialect: dialect, Driver: os.Getenv("FXCQRS_CRASH_DRIVER"), DSN: dsn}.Pool()
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		return database{Dialect: dialect, DB: db}
	}
	main := open(os.Getenv("FXCQRS_CRASH_DSN"))
	var stores []fxoutbox.TenantStore
	for i, spec := range strings.Split(os.Getenv("FXCQRS_CRASH_TENANTS"), ",") {
		st := fxoutbox.TenantStore{ID: fmt.Sprintf("t%d", i)}
		if name, ok := strings.CutPrefix(spec, "schema:"); ok {
			st.Schema = name
		} else {
			st.DB = open(strings.TrimPrefix(spec, "dsn:")).DB
		}
		stores = append(stores, st)
	}
	src := fxoutbox.StaticTenantStores(stores...)
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	b, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc, Tenants: src},
		[]fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders")}, []fxbus.Subscription{fxbus.NewSubscription[OrderPlaced]("orders")})
	require.NoError(t, err)
	o, err := fxoutbox.New(main.DB, b, fxoutbox.Config{
		Dialect: dialect, Inbox: true, TenantStores: src, MaxConnections: 8,
		Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond, Lease: 500 * time.Millisecond},
	}, nil)
	require.NoError(t, err)
	// Every delivery, before the inbox decides, in the tenant's store:
	// the raw count, duplicates included.
	deliveries := fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
		if e, ok := call.Message.(OrderPlaced); ok && fxbus.MessageID(ctx) != "" {
			if err := o.InTenant(ctx, fxbus.TenantOf(ctx), func(ctx context.Context) error {
				_, err := fxoutbox.Tx(ctx).ExecContext(ctx, dialect.Rebind("INSERT INTO deliveries (order_id) VALUES (?)"), e.ID)
				return err
			}); err != nil {
				return nil, err
			}
		}
		return next(ctx)
	}), fxcqrs.KindEvent)
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithMiddleware(deliveries, o.UnitOfWork()),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
			_, err := fxoutbox.Tx(ctx).ExecContext(ctx, dialect.Rebind("INSERT INTO effects (order_id) VALUES (?)"), e.ID)
			return err
		})),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, dialect.Rebind("INSERT INTO orders (id, tenant) VALUES (?, ?)"), c.ID, fxbus.TenantOf(ctx)); err != nil {
				return err
			}
			fxcqrs.Emit(ctx, OrderPlaced(c))
			if c.ID%5 == 0 {
				return errors.New("rolled back on purpose")
			}
			return nil
		})))
	require.NoError(t, err)
	o.DeliverTo(m)
	require.NoError(t, o.Start(context.Background()))
	require.NoError(t, b.Start(context.Background(), m))
	if mode == crashtest.Drain {
		waitFor(t, func() bool {
			for _, st := range stores {
				adm, err := o.AdminOf(st.ID)
				require.NoError(t, err)
				backlog, err := adm.Backlog(context.Background())
				require.NoError(t, err)
				if len(backlog) > 0 {
					return false
				}
			}
			return true
		})
		_ = b.Stop(context.Background())
		_ = m.Stop(context.Background())
		_ = o.Stop(context.Background())
		return
	}
	crashtest.Ready()
	for id := crashtest.Round() * 1_000_000; ; id++ { // until killed
		_ = fxcqrs.Exec(fxbus.WithTenant(context.Background(), stores[(id%1_000_000)%crashTenants].ID), m, PlaceOrder{ID: id})
	}
}
