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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
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
	src := &tenantSource{}
	src.set(storesOf(tenants)...)
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
		assert.Equal(t, []string{"order-1"}, keys)
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
	src := &tenantSource{}
	src.set(storesOf(tenants)...)
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

	src.set() // s0 leaves
	keys, err := parking.ParkedKeys(ctx, "inbound")
	require.NoError(t, err)
	assert.Equal(t, []string{"k"}, keys, "s0's parked key, though s0 left")
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
