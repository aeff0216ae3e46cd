package fxoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// recorderRig is an fx application with the outbox's Module, tenant
// stores, and a subscription of "inbound" that keeps its keys' order,
// whose handler refuses the orders in fail and reports the others, as
// "tenant/id", on handled.
type recorderRig struct {
	outbox  *fxoutbox.Outbox
	gc      *gochannel.GoChannel
	handled chan string

	mu   sync.Mutex
	fail map[int]bool
}

func newRecorderRig(t *testing.T, main database, tenants []tenantStore) *recorderRig {
	t.Helper()
	r := &recorderRig{handled: make(chan string, 64), fail: map[int]bool{}}
	// Blocking until acknowledged: a Publish returns once the message was
	// handled, dead-lettered or parked.
	r.gc = gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64, Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = r.gc.Close() })
	src := &outboxtest.TenantSource{}
	src.Set(storesOf(tenants)...)
	app := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(main.DB, fxoutbox.Config{Dialect: main.Dialect, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond}}),
		fx.Supply(fx.Annotate(r.gc, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fx.Supply(fx.Annotate(src, fx.As(new(fxoutbox.TenantStores)), fx.As(new(fxbus.Tenants)))),
		fxbus.Subscribe[OrderPlaced]("inbound", fxbus.InOrder(),
			fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 1, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond})),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(ctx context.Context, e OrderPlaced) error {
				r.mu.Lock()
				fail := r.fail[e.ID]
				r.mu.Unlock()
				if fail {
					return errors.New("refused for good")
				}
				r.handled <- fmt.Sprintf("%s/%d", fxbus.TenantOf(ctx), e.ID)
				return nil
			}
		}),
		fx.Populate(&r.outbox),
	)
	app.RequireStart()
	t.Cleanup(app.RequireStop)
	return r
}

func (r *recorderRig) failing(id int, fail bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail[id] = fail
}

// publish sends order id of tenant with key ("": none) to "inbound",
// and returns once it was acknowledged.
func (r *recorderRig) publish(t *testing.T, id int, tenant, key string) {
	t.Helper()
	msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"ID":%d}`, id))
	msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
	if key != "" {
		msg.Metadata.Set(fxbus.MetadataKey, key)
	}
	if tenant != "" {
		msg.Metadata.Set(fxbus.MetadataTenant, tenant)
	}
	require.NoError(t, r.gc.Publish("inbound", msg))
}

// nothingHandled fails if a handler reported anything.
func (r *recorderRig) nothingHandled(t *testing.T) {
	t.Helper()
	select {
	case got := <-r.handled:
		t.Fatalf("handled %s", got)
	default:
	}
}

// inboundDead counts the inbound dead letters in s's store.
func inboundDead(t *testing.T, s tenantStore) int {
	t.Helper()
	return count(t, s.db, "SELECT COUNT(*) FROM "+s.table("fxcqrs_outbox_inbound_dead"))
}

// recorderLayouts runs test on PostgreSQL with two tenants in schemas of
// the outbox's database, and on SQLite with two tenants in files of
// their own; the default store is main's.
func recorderLayouts(t *testing.T, test func(t *testing.T, main database, tenants []tenantStore)) {
	t.Helper()
	for _, d := range []fxoutbox.Dialect{fxoutbox.PostgreSQL, fxoutbox.SQLite} {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel()
			main := openDatabase(t, d)
			var tenants []tenantStore
			if d == fxoutbox.PostgreSQL {
				tenants = tenantSchemas(t, main, "s", 2)
			} else {
				tenants = tenantDatabases(t, d, "s", 2)
			}
			test(t, main, tenants)
		})
	}
}

// A handler that fails for good on tenant s0's message: the dead letter
// is in s0's store, and in no other; AdminOf("s0") lists it with its
// tenant.
func TestTenantDeadLetterInItsStore(t *testing.T) {
	t.Parallel()
	recorderLayouts(t, func(t *testing.T, main database, tenants []tenantStore) {
		r := newRecorderRig(t, main, tenants)
		r.failing(1, true)
		r.publish(t, 1, "s0", "")
		require.Eventually(t, func() bool { return inboundDead(t, tenants[0]) == 1 }, time.Minute, 10*time.Millisecond, "in s0's store")
		assert.Zero(t, inboundDead(t, tenants[1]), "not in s1's")
		assert.Zero(t, count(t, main.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_inbound_dead"), "not in the default store")
		admin, err := r.outbox.AdminOf("s0")
		require.NoError(t, err)
		letters, err := admin.ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: "inbound"})
		require.NoError(t, err)
		require.Len(t, letters, 1)
		assert.Equal(t, "s0", letters[0].Tenant)
		assert.Contains(t, letters[0].Error, "refused for good")
		r.nothingHandled(t)
	})
}

// Under InOrder, a key of tenant s0 that failed for good is parked in
// s0's store: s0's later messages of the key are parked behind it, while
// tenant s1's message of the same key is handled (a key is parked per
// tenant) and does not free s0's; the release through AdminOf("s0")
// lets s0's through, in their order, and empties s0's letters.
func TestTenantParkedKeyInItsStore(t *testing.T) {
	t.Parallel()
	recorderLayouts(t, func(t *testing.T, main database, tenants []tenantStore) {
		r := newRecorderRig(t, main, tenants)
		r.failing(10, true)
		r.publish(t, 10, "s0", "order-1")
		require.Eventually(t, func() bool { return inboundDead(t, tenants[0]) == 1 }, time.Minute, 10*time.Millisecond, "parked in s0's store")
		r.publish(t, 11, "s0", "order-1")
		r.publish(t, 20, "s1", "order-1")
		select {
		case got := <-r.handled:
			assert.Equal(t, "s1/20", got, "another tenant's message of the key goes on")
		case <-time.After(time.Minute):
			t.Fatal("s1's message of the key was never handled")
		}
		r.publish(t, 12, "s0", "order-1")
		r.nothingHandled(t)
		assert.Equal(t, 3, inboundDead(t, tenants[0]), "the key's first and the two behind it, in s0's store")
		assert.Zero(t, inboundDead(t, tenants[1]))
		assert.Zero(t, count(t, main.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_inbound_dead"), "nothing in the default store")
		keys, err := r.outbox.Admin().ParkedKeys(context.Background(), "inbound")
		require.NoError(t, err)
		assert.Empty(t, keys, "the default store parks nothing")

		admin, err := r.outbox.AdminOf("s0")
		require.NoError(t, err)
		keys, err = admin.ParkedKeys(context.Background(), "inbound")
		require.NoError(t, err)
		assert.Equal(t, []fxbus.ParkedKey{{Tenant: "s0", Key: "order-1"}}, keys)
		r.failing(10, false)
		n, err := admin.Release(context.Background(), "inbound", "order-1", "test", "the handler is fixed")
		require.NoError(t, err)
		assert.Equal(t, 3, n)
		for _, want := range []string{"s0/10", "s0/11", "s0/12"} {
			select {
			case got := <-r.handled:
				assert.Equal(t, want, got, "released in their order")
			case <-time.After(time.Minute):
				t.Fatalf("%s was never handled", want)
			}
		}
		require.Eventually(t, func() bool { return inboundDead(t, tenants[0]) == 0 }, time.Minute, 10*time.Millisecond, "each arrived")
	})
}

// A message whose tenant is an injection, or names a store's id but for
// a byte, is dead-lettered in the default store with its reason; no
// tenant's store is touched.
func TestUntrustedTenantDeadLetterInDefaultStore(t *testing.T) {
	t.Parallel()
	recorderLayouts(t, func(t *testing.T, main database, tenants []tenantStore) {
		r := newRecorderRig(t, main, tenants)
		untrusted := []string{`s0"; DROP SCHEMA public CASCADE; --`, "S0", "s0 ", strings.Repeat("s0", 5000)}
		for i, tenant := range untrusted {
			r.publish(t, 40+i, tenant, "order-7")
		}
		require.Eventually(t, func() bool {
			return count(t, main.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_inbound_dead") == len(untrusted)
		}, time.Minute, 10*time.Millisecond, "in the default store")
		letters, err := r.outbox.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: "inbound"})
		require.NoError(t, err)
		for _, l := range letters {
			assert.True(t, strings.HasPrefix(l.Error, "unknown tenant "), l.Error)
		}
		for _, s := range tenants {
			assert.Zero(t, inboundDead(t, s), "tenant %s's store untouched", s.store.ID)
		}
		keys, err := r.outbox.Admin().ParkedKeys(context.Background(), "inbound")
		require.NoError(t, err)
		assert.Empty(t, keys, "an untrusted tenant parks no key")
		r.nothingHandled(t)
	})
}

// A store that left the source keeps its parked letters, and the
// recorder still finds them: its parked keys, and a released letter's
// admission, repark and arrival go to that store, never the default one.
func TestTenantParkingOfAStoreThatLeft(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.SQLite)
	tenants := tenantDatabases(t, fxoutbox.SQLite, "s", 1)
	src := &outboxtest.TenantSource{}
	src.Set(storesOf(tenants)...)
	require.NoError(t, fxoutbox.MigrateAll(ctx, main.DB, src, fxoutbox.SQLite, fxoutbox.Tables{}, nil))
	rec, err := fxoutbox.NewDeadLetterRecorder(main.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite}, src)
	require.NoError(t, err)
	parking, ok := rec.(fxbus.Parking)
	require.True(t, ok)
	msg := message.NewMessage("m-1", []byte(`{"ID":1}`))
	msg.Metadata.Set(fxbus.MetadataTenant, "s0")
	msg.Metadata.Set(fxbus.MetadataKey, "k")
	require.NoError(t, parking.RecordParked(ctx, "inbound", "k", msg, errors.New("refused")))
	store, err := fxoutbox.NewAdmin(tenants[0].db, fxoutbox.SQLite, fxoutbox.Tables{}, nil)
	require.NoError(t, err)

	src.Set() // s0 leaves
	keys, err := parking.ParkedKeys(ctx, "inbound")
	require.NoError(t, err)
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "s0", Key: "k"}}, keys, "s0's parked key, though s0 left")
	release := func() {
		t.Helper()
		n, err := store.Release(ctx, "inbound", "k", "test", "once more")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		adm, err := parking.Admit(ctx, "inbound", "k", msg)
		require.NoError(t, err)
		require.Equal(t, fxbus.AdmitReplay, adm)
	}
	release()
	require.NoError(t, parking.Repark(ctx, "inbound", "k", "m-1", errors.New("refused again")))
	letters, err := store.ListDead(ctx, fxoutbox.DeadLetterFilter{Topic: "inbound"})
	require.NoError(t, err)
	require.Len(t, letters, 1)
	assert.Equal(t, "refused again", letters[0].Error, "reparked in s0's store")
	release()
	require.NoError(t, parking.Arrived(ctx, "inbound", "k", "m-1"))
	assert.Zero(t, inboundDead(t, tenants[0]), "arrived: gone from s0's store")
	assert.Zero(t, count(t, main.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_inbound_dead"), "nothing in the default store")
}

// parkingRig is the recorder of tenants' stores, driven without a bus:
// the source lists listed of tenants and the stores of migrated are
// migrated; it logs its warnings to logs.
type parkingRig struct {
	rec     fxbus.DeadLetterRecorder
	parking fxbus.Parking
	src     *outboxtest.TenantSource
	logs    *observer.ObservedLogs
}

func newParkingRig(t *testing.T, main database, cfg fxoutbox.Config, migrated, listed []tenantStore) *parkingRig {
	t.Helper()
	r := &parkingRig{src: &outboxtest.TenantSource{}}
	r.src.Set(storesOf(migrated)...)
	require.NoError(t, fxoutbox.MigrateAll(context.Background(), main.DB, r.src, main.Dialect, fxoutbox.Tables{}, nil))
	r.src.Set(storesOf(listed)...)
	core, logs := observer.New(zapcore.WarnLevel)
	r.logs = logs
	cfg.Dialect = main.Dialect
	var err error
	r.rec, err = fxoutbox.NewDeadLetterRecorderLogged(main.DB, cfg, r.src, zap.New(core))
	require.NoError(t, err)
	var ok bool
	r.parking, ok = r.rec.(fxbus.Parking)
	require.True(t, ok)
	return r
}

// tenantMessage is message id of tenant with key "k".
func tenantMessage(id, tenant string) *message.Message {
	msg := message.NewMessage(id, []byte(`{"ID":1}`))
	msg.Metadata.Set(fxbus.MetadataTenant, tenant)
	msg.Metadata.Set(fxbus.MetadataKey, "k")
	return msg
}

// warnedAbout is how many warnings name tenant.
func warnedAbout(logs *observer.ObservedLogs, tenant string) int {
	return logs.FilterField(zap.String("tenant", tenant)).Len()
}

// A store the source lists that the outbox has not migrated yet holds no
// parked key: the parked keys are those of the others, not an error (which
// the bus would answer by redelivering every message of the lane).
func TestTenantParkedKeysOfAStoreNotMigrated(t *testing.T) {
	t.Parallel()
	recorderLayouts(t, func(t *testing.T, main database, tenants []tenantStore) {
		ctx := context.Background()
		r := newParkingRig(t, main, fxoutbox.Config{}, tenants[:1], tenants)
		require.NoError(t, r.parking.RecordParked(ctx, "inbound", "k", tenantMessage("m-1", "s0"), errors.New("refused")))
		keys, err := r.parking.ParkedKeys(ctx, "inbound")
		require.NoError(t, err, "s1 is listed, not migrated")
		assert.Equal(t, []fxbus.ParkedKey{{Tenant: "s0", Key: "k"}}, keys)
		adm, err := r.parking.Admit(ctx, "inbound", "j", tenantMessage("m-2", "s0"))
		require.NoError(t, err)
		assert.Equal(t, fxbus.AdmitFree, adm)
		assert.Zero(t, r.logs.Len(), "nothing to warn of")
	})
}

// Stores that left the source: one that holds nothing is forgotten; one
// that holds a parked key and can be read no more (its pool closed) is
// logged, naming its tenant, and passed over, not an error.
func TestTenantParkedKeysOfStoresThatLeft(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.SQLite)
	tenants := tenantDatabases(t, fxoutbox.SQLite, "s", 2)
	r := newParkingRig(t, main, fxoutbox.Config{}, tenants, tenants)
	require.NoError(t, r.parking.RecordParked(ctx, "inbound", "k", tenantMessage("m-1", "s0"), errors.New("refused")))
	keys, err := r.parking.ParkedKeys(ctx, "inbound")
	require.NoError(t, err)
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "s0", Key: "k"}}, keys)
	assert.Equal(t, []string{"s0", "s1"}, fxoutbox.StoresHeld(r.rec))

	r.src.Set() // both leave
	keys, err = r.parking.ParkedKeys(ctx, "inbound")
	require.NoError(t, err)
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "s0", Key: "k"}}, keys, "s0's key, though s0 left")
	assert.Equal(t, []string{"s0"}, fxoutbox.StoresHeld(r.rec), "s1 left holding nothing: forgotten")

	require.NoError(t, tenants[0].db.Close())
	keys, err = r.parking.ParkedKeys(ctx, "inbound")
	require.NoError(t, err, "s0 left: not served, so not an error")
	assert.Empty(t, keys)
	assert.Equal(t, 1, warnedAbout(r.logs, "s0"))
	assert.Zero(t, warnedAbout(r.logs, "s1"))
}

// A key is parked per tenant: s1's message of a key s0 parked is free
// (the bus does not even ask, knowing the key parked for s0 alone), and
// its store is the only one read, so that s0's store, which cannot be
// read, holds nothing up; the parked keys mark s0's as unread ({s0, ""}),
// a key missed there losing its order, and s0's own message's Admit
// fails, to be redelivered.
func TestTenantAdmitAsksItsTenantsStoreAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.SQLite)
	tenants := tenantDatabases(t, fxoutbox.SQLite, "s", 2)
	r := newParkingRig(t, main, fxoutbox.Config{}, tenants, tenants)
	require.NoError(t, r.parking.RecordParked(ctx, "inbound", "k", tenantMessage("m-1", "s0"), errors.New("refused")))
	keys, err := r.parking.ParkedKeys(ctx, "inbound")
	require.NoError(t, err)
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "s0", Key: "k"}}, keys, "parked for s0, not for s1")
	require.NoError(t, tenants[0].db.Close())

	adm, err := r.parking.Admit(ctx, "inbound", "k", tenantMessage("m-2", "s1"))
	require.NoError(t, err)
	assert.Equal(t, fxbus.AdmitFree, adm, "s0's park holds back none of s1's")
	assert.Zero(t, fxoutbox.AdmitsHeld(r.rec), "nothing of s1's released")
	assert.Zero(t, r.logs.Len(), "s0's store is not read")
	assert.Zero(t, inboundDead(t, tenants[1]), "nothing of s1's parked")

	keys, err = r.parking.ParkedKeys(ctx, "inbound")
	require.NoError(t, err, "s0 is listed, and cannot be read: its tenant's keys alone wait")
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "s0", Key: ""}}, keys)
	assert.Equal(t, 1, warnedAbout(r.logs, "s0"))
	_, err = r.parking.Admit(ctx, "inbound", "j", tenantMessage("m-3", "s0"))
	require.Error(t, err, "s0's store cannot be read")
}

// The default store that cannot be read (here its table of parked
// letters gone, which a tenant store may lack) still fails the parked
// keys: every tenant without a store of its own parks there.
func TestTenantParkedKeysOfTheDefaultStoreThatCannotBeRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.SQLite)
	tenants := tenantDatabases(t, fxoutbox.SQLite, "s", 1)
	r := newParkingRig(t, main, fxoutbox.Config{}, tenants, tenants)
	require.NoError(t, r.parking.RecordParked(ctx, "inbound", "k", tenantMessage("m-1", "s0"), errors.New("refused")))
	_, err := main.DB.ExecContext(ctx, "DROP TABLE fxcqrs_outbox_inbound_dead")
	require.NoError(t, err)
	_, err = r.parking.ParkedKeys(ctx, "inbound")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the default store")
}

// A key is parked per tenant in one store too (the default store, where
// a bus with tenants and no tenant stores parks): acme's parked key holds
// back acme's next message of it, never globex's.
func TestParkedKeyPerTenantInOneStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.SQLite)
	require.NoError(t, fxoutbox.Migrate(ctx, main.DB, fxoutbox.SQLite, fxoutbox.Tables{}))
	admin, err := fxoutbox.NewAdmin(main.DB, fxoutbox.SQLite, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	require.NoError(t, admin.RecordParked(ctx, "inbound", "k", tenantMessage("m-1", "acme"), errors.New("refused")))
	keys, err := admin.ParkedKeys(ctx, "inbound")
	require.NoError(t, err)
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "acme", Key: "k"}}, keys)
	adm, err := admin.Admit(ctx, "inbound", "k", tenantMessage("m-2", "globex"))
	require.NoError(t, err)
	assert.Equal(t, fxbus.AdmitFree, adm, "globex's message of acme's parked key")
	adm, err = admin.Admit(ctx, "inbound", "k", tenantMessage("m-3", "acme"))
	require.NoError(t, err)
	assert.Equal(t, fxbus.AdmitParked, adm, "acme's next message of its parked key")
	assert.Equal(t, 2, count(t, main.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_inbound_dead"))
}

// A released message whose Arrived or Repark never comes (redelivered to
// another replica) is forgotten after an hour by the outbox's clock, and
// beyond the bound the oldest is.
func TestTenantAdmitsAreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.SQLite)
	tenants := tenantDatabases(t, fxoutbox.SQLite, "s", 2)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	r := newParkingRig(t, main, fxoutbox.Config{Now: clk.Now}, tenants, tenants)
	store, err := fxoutbox.NewAdmin(tenants[1].db, fxoutbox.SQLite, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	// Each of s1's messages, of a key of its own, parks its key and is
	// released: admitted as the key's release.
	released := map[string]bool{}
	admit := func(id string) {
		t.Helper()
		msg, key := tenantMessage(id, "s1"), "k-"+id
		if !released[id] {
			released[id] = true
			require.NoError(t, r.parking.RecordParked(ctx, "inbound", key, msg, errors.New("refused")))
			n, err := store.Release(ctx, "inbound", key, "test", "once more")
			require.NoError(t, err)
			require.Equal(t, 1, n)
		}
		adm, err := r.parking.Admit(ctx, "inbound", key, msg)
		require.NoError(t, err)
		require.Equal(t, fxbus.AdmitReplay, adm, "released")
	}
	admit("m-1")
	admit("m-1") // delivered again here: held once
	assert.Equal(t, 1, fxoutbox.AdmitsHeld(r.rec))
	clk.Set(clk.Now().Add(time.Hour))
	admit("m-2")
	assert.Equal(t, 1, fxoutbox.AdmitsHeld(r.rec), "m-1 forgotten after an hour")

	fxoutbox.SetMaxAdmits(r.rec, 2)
	clk.Set(clk.Now().Add(time.Minute))
	admit("m-3")
	clk.Set(clk.Now().Add(time.Minute))
	admit("m-4")
	assert.Equal(t, 2, fxoutbox.AdmitsHeld(r.rec), "the oldest, m-2, forgotten")
	require.NoError(t, r.parking.Repark(ctx, "inbound", "k-m-3", "m-3", errors.New("refused again")))
	require.NoError(t, r.parking.Arrived(ctx, "inbound", "k-m-4", "m-4"))
	assert.Zero(t, fxoutbox.AdmitsHeld(r.rec))
	letters, err := store.ListDead(ctx, fxoutbox.DeadLetterFilter{Topic: "inbound"})
	require.NoError(t, err)
	errs := map[string]string{}
	for _, l := range letters {
		errs[l.MessageID] = l.Error
	}
	assert.Equal(t, "refused again", errs["m-3"], "m-3 reparked in s1's store")
	assert.NotContains(t, errs, "m-4", "m-4 arrived: gone from s1's store")
}

// A store that hangs (another connection holds an ACCESS EXCLUSIVE lock
// on its table of parked letters in an open transaction: the read waits,
// and never fails) is given up at RelayConfig.StoreTimeout, so that the
// bus's start does not hang on it: listed, it is logged, naming its
// tenant, and returned as its tenant's unread mark ({h1, ""}) beside the
// other stores' keys, not an error (which would fail the bus's start
// for every tenant); once it left the source, it is logged and passed
// over.
func TestTenantParkedKeysOfAStoreThatHangs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	tenants := tenantSchemas(t, main, "h", 2)
	hung := tenants[1]
	r := newParkingRig(t, main, fxoutbox.Config{Relay: fxoutbox.RelayConfig{StoreTimeout: 300 * time.Millisecond}}, tenants, tenants)
	require.NoError(t, r.parking.RecordParked(ctx, "inbound", "k", tenantMessage("m-1", "h0"), errors.New("refused")))
	require.NoError(t, r.parking.RecordParked(ctx, "inbound", "k", tenantMessage("m-2", "h1"), errors.New("refused")))
	keys, err := r.parking.ParkedKeys(ctx, "inbound")
	require.NoError(t, err)
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "h0", Key: "k"}, {Tenant: "h1", Key: "k"}}, keys)

	lock, err := main.DB.BeginTx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lock.Rollback() }) // before the rig's: a read stuck on the lock would hold it
	_, err = lock.ExecContext(ctx, "LOCK TABLE "+hung.table("fxcqrs_outbox_inbound_dead")+" IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	type result struct {
		keys []fxbus.ParkedKey
		err  error
	}
	parkedKeys := func() result {
		t.Helper()
		done := make(chan result, 1)
		go func() {
			keys, err := r.parking.ParkedKeys(ctx, "inbound")
			done <- result{keys, err}
		}()
		select {
		case res := <-done:
			return res
		case <-time.After(30 * time.Second):
			t.Fatal("the parked keys hang on the store that hangs")
			return result{}
		}
	}

	res := parkedKeys()
	require.NoError(t, res.err, "h1 is listed, and hangs: its tenant's keys alone wait")
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "h0", Key: "k"}, {Tenant: "h1", Key: ""}}, res.keys)
	require.Equal(t, 1, warnedAbout(r.logs, "h1"))
	warned := r.logs.FilterField(zap.String("tenant", "h1")).All()[0]
	assert.Equal(t, "the parked keys of a tenant store cannot be read: its tenant's keyed messages wait until it answers", warned.Message)
	assert.Contains(t, warned.ContextMap()["error"], "StoreTimeout")

	// Asked about h1's message of k, the store that hangs fails within
	// StoreTimeout too: the bus redelivers the message, which would
	// otherwise hold one of the subscription's InFlight places until
	// the lock goes.
	admitted := make(chan error, 1)
	go func() {
		_, err := r.parking.Admit(ctx, "inbound", "k", tenantMessage("m-3", "h1"))
		admitted <- err
	}()
	select {
	case err := <-admitted:
		require.Error(t, err)
		assert.Contains(t, err.Error(), `tenant "h1"`)
		assert.Contains(t, err.Error(), "StoreTimeout")
	case <-time.After(30 * time.Second):
		t.Fatal("Admit hangs on the store that hangs")
	}

	r.src.Set(storesOf(tenants[:1])...) // h1 leaves
	res = parkedKeys()
	require.NoError(t, res.err, "h1 left: not served, so not an error")
	assert.Equal(t, []fxbus.ParkedKey{{Tenant: "h0", Key: "k"}}, res.keys)
	assert.Equal(t, 2, warnedAbout(r.logs, "h1"))
	assert.Zero(t, warnedAbout(r.logs, "h0"))
}

// The stores' parked keys are read at once, not one after another: two
// stores that hang cost the bus's start one StoreTimeout, not two. Both
// reads are seen waiting on their locks together, which reads one after
// another never are within the timeout.
func TestTenantParkedKeysReadTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	main := openDatabase(t, fxoutbox.PostgreSQL)
	tenants := tenantSchemas(t, main, "t", 3)
	r := newParkingRig(t, main, fxoutbox.Config{Relay: fxoutbox.RelayConfig{StoreTimeout: 20 * time.Second, Lease: time.Minute}}, tenants, tenants)
	require.NoError(t, r.parking.RecordParked(ctx, "inbound", "k", tenantMessage("m-1", "t0"), errors.New("refused")))

	lock, err := main.DB.BeginTx(ctx, nil)
	require.NoError(t, err)
	var once sync.Once
	release := func() { once.Do(func() { require.NoError(t, lock.Rollback()) }) }
	t.Cleanup(release) // before the rig's: a read stuck on the lock would hold it
	for _, hung := range tenants[1:] {
		_, err = lock.ExecContext(ctx, "LOCK TABLE "+hung.table("fxcqrs_outbox_inbound_dead")+" IN ACCESS EXCLUSIVE MODE")
		require.NoError(t, err)
	}
	done := make(chan error, 1)
	var keys []fxbus.ParkedKey
	go func() {
		var err error
		keys, err = r.parking.ParkedKeys(ctx, "inbound")
		done <- err
	}()
	waiting := "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace" +
		" WHERE NOT l.granted AND c.relname = 'fxcqrs_outbox_inbound_dead' AND n.nspname IN ('" + tenants[1].in + "', '" + tenants[2].in + "')"
	assert.Eventually(t, func() bool { return count(t, main.DB, waiting) == 2 }, 15*time.Second, time.Millisecond,
		"both hung stores' reads wait at once")
	release()
	select {
	case err := <-done:
		require.NoError(t, err)
		assert.Equal(t, []fxbus.ParkedKey{{Tenant: "t0", Key: "k"}}, keys)
	case <-time.After(30 * time.Second):
		t.Fatal("the parked keys were not read once the locks went")
	}
}
