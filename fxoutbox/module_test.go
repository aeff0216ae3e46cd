package fxoutbox_test

import (
	"context"
	"database/sql"
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

// Under fx: the outbox takes the bus's routes over (nothing is published
// directly), the unit of work wraps commands, the relay runs with the
// lifecycle.
func TestModule(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	out := received(t, gc, "orders")
	var m *fxcqrs.Mediator
	var health *fxcqrs.Health
	var inTx bool
	app := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxcqrs.HealthModule,
		fx.Populate(&health),
		fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite}),
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fxbus.Route[OrderPlaced]("orders"),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				inTx = fxoutbox.Tx(ctx) != nil
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				return nil
			}
		}),
		fx.Populate(&m),
	)
	app.RequireStart()
	require.NoError(t, health.Ready(context.Background()), "the outbox's checks, registered by the module")
	_, err := d.DB.Exec("DELETE FROM fxcqrs_outbox_migrations")
	require.NoError(t, err)
	require.ErrorContains(t, health.Live(context.Background()), "fxoutbox.schema", "a database that lost its schema is not alive")
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 8}))
	assert.True(t, inTx)
	assert.JSONEq(t, `{"ID":8}`, string(next(t, out).Payload))
	app.RequireStop()
	select {
	case msg := <-out:
		t.Fatalf("published twice (directly and by the relay): %s", msg.Payload)
	default:
	}
}

// Two relays on one database: each topic is sent by one of them, in the
// order its rows were written; nothing is sent twice as a matter of
// course.
func TestTwoRelays(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.PostgreSQL)
	// Blocking until acknowledged: GoChannel delivers each message on a
	// goroutine of its own, and only waiting keeps their order.
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024, Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	const topics, perTopic = 4, 50
	var (
		mu  sync.Mutex
		got = map[string][]string{}
	)
	var wg sync.WaitGroup
	for i := range topics {
		topic := "t" + string(rune('a'+i))
		in, err := gc.Subscribe(context.Background(), topic)
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for msg := range in {
				msg.Ack()
				mu.Lock()
				got[topic] = append(got[topic], string(msg.Payload))
				mu.Unlock()
			}
		}()
	}
	// Rows written first, as producers would; then two relays start.
	for j := range perTopic {
		for i := range topics {
			_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, '{}')"),
				"t"+string(rune('a'+i)), watermill.NewUUID(), []byte{byte('0' + j/10), byte('0' + j%10)})
			require.NoError(t, err)
		}
	}
	for range 2 {
		o := newRelayOnly(t, d.DB, gc)
		require.NoError(t, o.Start(context.Background()))
		t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })
	}
	require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 }, time.Minute, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for i := range topics {
		topic := "t" + string(rune('a'+i))
		require.Len(t, got[topic], perTopic, "%s: each row once", topic)
		for j, payload := range got[topic] {
			assert.Equal(t, string([]byte{byte('0' + j/10), byte('0' + j%10)}), payload, "%s: in order", topic)
		}
	}
	_ = gc.Close()
	wg.Wait()
}

// newRelayOnly is an outbox used only for its relay.
func newRelayOnly(t *testing.T, db *sql.DB, pub message.Publisher) *fxoutbox.Outbox {
	t.Helper()
	bus, err := fxbus.New(fxbus.Config{Publisher: pub}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(db, bus, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Relay: fxoutbox.RelayConfig{PollInterval: 5 * time.Millisecond, BatchSize: 7}}, nil)
	require.NoError(t, err)
	return o
}

// Under fx: fxoutbox.Durable and fxoutbox.Schedulable register their types
// with the module, which gives the outbox its mediator: a durable event's
// handler runs from its row, and a scheduled command runs when due.
func TestModuleDurableAndScheduled(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	var m *fxcqrs.Mediator
	handled := make(chan string, 2)
	app := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond}}),
		fxoutbox.Durable[Shipped](),
		fxoutbox.Schedulable[CancelUnpaid](),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, Shipped(c))
				_, err := fxoutbox.ScheduleAfter(ctx, 0, CancelUnpaid(c))
				return err
			}
		}),
		fxcqrs.AsCommandHandler(func() commandFunc[CancelUnpaid] {
			return func(ctx context.Context, c CancelUnpaid) error {
				handled <- "scheduled " + fxbus.MessageID(ctx)
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Shipped] {
			return func(ctx context.Context, e Shipped) error {
				handled <- "durable " + fxbus.MessageID(ctx)
				return nil
			}
		}),
		fx.Populate(&m),
	)
	app.RequireStart()
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 3}))
	var got []string
	for range 2 {
		select {
		case h := <-handled:
			got = append(got, h[:strings.IndexByte(h, ' ')])
			assert.Greater(t, len(h), len("durable "), "run from a row: it has a message id")
		case <-time.After(time.Minute):
			t.Fatal("not delivered")
		}
	}
	assert.ElementsMatch(t, []string{"durable", "scheduled"}, got)
	app.RequireStop()
}
