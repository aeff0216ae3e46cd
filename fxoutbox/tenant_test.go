package fxoutbox_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
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
)

// tenantRig is newRig with a bus that knows the tenants acme and globex
// and records its dead letters in the outbox's tables; its subscription
// of "inbound" takes sub's options after its own.
func tenantRig(t *testing.T, d database, cfg fxoutbox.Config, sub []fxbus.SubscribeOption, opts ...fxcqrs.Option) *rig {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64, Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	admin, err := fxoutbox.NewAdmin(d.DB, d.Dialect, fxoutbox.Tables{}, cfg.Now)
	require.NoError(t, err)
	bus, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc, Tenants: fxbus.StaticTenants("acme", "globex"), DeadLetters: admin},
		[]fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders")},
		[]fxbus.Subscription{fxbus.NewSubscription[OrderPlaced]("inbound", append([]fxbus.SubscribeOption{
			fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 1, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}),
		}, sub...)...)})
	require.NoError(t, err)
	cfg.Dialect = d.Dialect
	cfg.Relay.PollInterval = 20 * time.Millisecond
	o, err := fxoutbox.New(d.DB, bus, cfg, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, append(opts, fxcqrs.WithMiddleware(o.UnitOfWork()))...)
	require.NoError(t, err)
	o.DeliverTo(m)
	require.NoError(t, o.Start(context.Background()))
	require.NoError(t, bus.Start(context.Background(), m))
	t.Cleanup(func() {
		require.NoError(t, bus.Stop(context.Background()))
		require.NoError(t, m.Stop(context.Background()))
		require.NoError(t, o.Stop(context.Background()))
	})
	return &rig{m: m, outbox: o, gc: gc}
}

// tenantSeen collects what handlers saw, by what.
type tenantSeen struct {
	mu  sync.Mutex
	got map[string]string
}

func (s *tenantSeen) set(ctx context.Context, what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got[what] = fxbus.TenantOf(ctx)
}

func (s *tenantSeen) get(what string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tenant, ok := s.got[what]
	return tenant, ok
}

// The tenant of the call that scheduled a command, or a routed event, or
// emitted a durable event, is stored with the row's metadata and is the
// tenant of its handling when the row comes due, hours later, in the
// outbox's own delivery and on the broker.
func TestTenantKeptBySchedulesAndDurableEvents(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		clock := newFakeClock()
		seen := &tenantSeen{got: map[string]string{}}
		r := tenantRig(t, d, fxoutbox.Config{
			Now:          clock.Now,
			Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[CancelUnpaid](), fxoutbox.DurableEvent[Shipped]()},
		}, nil,
			fxcqrs.WithCommandHandlers(
				commandFunc[Remind](func(ctx context.Context, c Remind) error {
					fxcqrs.Emit(ctx, Shipped{ID: c.ID})
					if _, err := fxoutbox.ScheduleAfter(ctx, c.Delay, OrderPlaced{ID: c.ID}); err != nil {
						return err
					}
					_, err := fxoutbox.ScheduleAfter(ctx, c.Delay, CancelUnpaid{ID: c.ID})
					return err
				}),
				commandFunc[CancelUnpaid](func(ctx context.Context, _ CancelUnpaid) error {
					seen.set(ctx, "scheduled command")
					return nil
				}),
			),
			fxcqrs.WithEventHandlers(eventFunc[Shipped](func(ctx context.Context, _ Shipped) error {
				seen.set(ctx, "durable event")
				return nil
			})))
		orders := received(t, r.gc, "orders")

		require.NoError(t, fxcqrs.Exec(fxbus.WithTenant(context.Background(), "acme"), r.m, Remind{ID: 1, Delay: time.Hour}))
		var stored string
		require.NoError(t, d.DB.QueryRow("SELECT metadata FROM fxcqrs_outbox_scheduled WHERE metadata LIKE '%OrderPlaced%'").Scan(&stored))
		assert.Contains(t, stored, `"tenant":"acme"`, "the schedule's row keeps the tenant")
		waitFor(t, func() bool { _, ok := seen.get("durable event"); return ok })
		tenant, _ := seen.get("durable event")
		assert.Equal(t, "acme", tenant, "the durable event's handler, run from its row")

		clock.Advance(time.Hour)
		msg := next(t, orders)
		assert.Equal(t, "acme", msg.Metadata.Get(fxbus.MetadataTenant), "the scheduled routed event goes out with its tenant")
		waitFor(t, func() bool { _, ok := seen.get("scheduled command"); return ok })
		tenant, _ = seen.get("scheduled command")
		assert.Equal(t, "acme", tenant, "the scheduled command runs under its tenant")
	})
}

// An inbound message of a known tenant that failed for good is recorded
// with its tenant among the dead letters, and a replay through the outbox
// handles it under that tenant again. A message of an untrusted tenant
// (an injection, 10 KB, empty, invalid UTF-8) is recorded as a dead letter
// with the reason, and touches nothing else: no handler, no inbox record,
// no outbox row, every table as it was.
func TestTenantKeptByDeadLetterReplay(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		var (
			fixed   atomic.Bool
			calls   atomic.Int32
			handled = make(chan string, 4)
		)
		r := tenantRig(t, d, fxoutbox.Config{Inbox: true}, nil,
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, _ OrderPlaced) error {
				if fxbus.MessageID(ctx) == "" {
					return nil
				}
				calls.Add(1)
				if !fixed.Load() {
					return errors.New("the ledger is down")
				}
				handled <- fxbus.TenantOf(ctx)
				return nil
			})))
		admin := r.outbox.Admin()
		publish := func(tenant string) *message.Message {
			msg := message.NewMessage(watermill.NewUUID(), []byte(`{"ID":5}`))
			msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
			msg.Metadata[fxbus.MetadataTenant] = tenant
			require.NoError(t, r.gc.Publish("inbound", msg))
			return msg
		}
		listDead := func(n int) []fxoutbox.DeadLetter {
			var letters []fxoutbox.DeadLetter
			waitFor(t, func() bool {
				var err error
				letters, err = admin.ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: "inbound"})
				require.NoError(t, err)
				return len(letters) >= n
			})
			return letters
		}

		msg := publish("acme")
		l := listDead(1)[0]
		assert.Equal(t, msg.UUID, l.MessageID)
		assert.Contains(t, l.Error, "the ledger is down")
		assert.Equal(t, "acme", l.Metadata[fxbus.MetadataTenant], "the dead letter keeps its tenant")
		fixed.Store(true)
		n, err := admin.Replay(context.Background(), []int64{l.ID}, "ops", "the ledger is back")
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		select {
		case tenant := <-handled:
			assert.Equal(t, "acme", tenant, "the replay is handled under its tenant")
		case <-time.After(time.Minute):
			t.Fatal("the replayed message was never handled")
		}
		waitFor(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 })
		inbox, before := count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"), calls.Load()
		waitFor(t, func() bool { return len(listDead(0)) == 0 })

		hostile := map[string]*message.Message{}
		for _, tenant := range []string{`x"; DROP SCHEMA public CASCADE; --`, strings.Repeat("a", 10<<10), "", "acme\xff\xfe", "initech"} {
			hostile[tenant] = publish(tenant)
		}
		letters := listDead(len(hostile))
		require.Len(t, letters, len(hostile))
		for _, l := range letters {
			assert.True(t, strings.HasPrefix(l.Error, "unknown tenant "), "%.40q: %s", l.Metadata[fxbus.MetadataTenant], l.Error)
		}
		assert.Equal(t, before, calls.Load(), "no handler ran")
		assert.Equal(t, inbox, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"), "no inbox record")
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"), "no outbox row")
		assert.Equal(t, len(hostile), count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_inbound_dead"), "the tables are all there")
	})
}

// Under InOrder, with the outbox's Admin as the parking: a message of an
// unknown tenant is recorded as a plain dead letter, its key is not
// parked, and the key's next message, of a known tenant, is handled.
func TestUnknownTenantParksNoKey(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		handled := make(chan int, 4)
		r := tenantRig(t, d, fxoutbox.Config{}, []fxbus.SubscribeOption{fxbus.InOrder()},
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
				if fxbus.MessageID(ctx) != "" {
					handled <- e.ID
				}
				return nil
			})))
		publish := func(id, tenant string) {
			msg := message.NewMessage(watermill.NewUUID(), []byte(`{"ID":`+id+`}`))
			msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
			msg.Metadata.Set(fxbus.MetadataKey, "order-1")
			msg.Metadata.Set(fxbus.MetadataTenant, tenant)
			require.NoError(t, r.gc.Publish("inbound", msg))
		}
		publish("1", "initech")
		publish("2", "acme")
		select {
		case id := <-handled:
			assert.Equal(t, 2, id, "the key's next message is handled")
		case <-time.After(time.Minute):
			t.Fatal("the key's next message was never handled")
		}
		keys, err := r.outbox.Admin().ParkedKeys(context.Background(), "inbound")
		require.NoError(t, err)
		assert.Empty(t, keys, "no key parked")
		letters, err := r.outbox.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: "inbound"})
		require.NoError(t, err)
		require.Len(t, letters, 1)
		assert.True(t, strings.HasPrefix(letters[0].Error, `unknown tenant "initech"`), letters[0].Error)
	})
}
