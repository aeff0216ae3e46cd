package fxoutbox_test

import (
	"context"
	"errors"
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
)

type (
	PlaceOrder  struct{ ID int }
	OrderPlaced struct{ ID int }
	Audited     struct{ ID int }
)

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// rig is a mediator with a bus over a GoChannel and an outbox on a test
// database, without fx.
type rig struct {
	m      *fxcqrs.Mediator
	outbox *fxoutbox.Outbox
	gc     *gochannel.GoChannel
}

func newRig(t *testing.T, d database, cfg fxoutbox.Config, opts ...fxcqrs.Option) *rig {
	t.Helper()
	// Persistent, and blocking until acknowledged: a test's Publish of an
	// inbound message returns once it was handled.
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64, Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc},
		[]fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders"), fxbus.NewRoute[Audited]("audit")},
		[]fxbus.Subscription{fxbus.NewSubscription[OrderPlaced]("inbound")})
	require.NoError(t, err)
	cfg.Dialect = d.Dialect
	if cfg.Relay.PollInterval == 0 {
		cfg.Relay.PollInterval = 50 * time.Millisecond
	}
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

// received subscribes to topic and returns what arrives, acknowledged.
func received(t *testing.T, gc *gochannel.GoChannel, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	in, err := gc.Subscribe(ctx, topic)
	require.NoError(t, err)
	out := make(chan *message.Message, 64)
	go func() {
		for msg := range in {
			msg.Ack()
			out <- msg
		}
	}()
	return out
}

func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg := <-ch:
		return msg
	case <-time.After(time.Minute):
		t.Fatal("no message came")
		return nil
	}
}

// The unit of work: the handler's writes and its routed events commit
// together; in-process handlers run after the commit and see it; the relay
// publishes the row and deletes it. A failed handler rolls both back.
func TestUnitOfWork(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		_, err := d.DB.Exec("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
		require.NoError(t, err)
		errBoom := errors.New("boom")
		var sawCommitted sync.Map
		r := newRig(t, d, fxoutbox.Config{},
			fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
				tx := fxoutbox.Tx(ctx)
				if tx == nil {
					return errors.New("no transaction")
				}
				if _, err := tx.ExecContext(ctx, d.Dialect.Rebind("INSERT INTO orders (id) VALUES (?)"), c.ID); err != nil {
					return err
				}
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				if c.ID < 0 {
					return errBoom
				}
				return nil
			})),
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(_ context.Context, e OrderPlaced) error {
				// Outside the transaction, on the pool: committed state.
				sawCommitted.Store(e.ID, count(t, d.DB, "SELECT COUNT(*) FROM orders") == 1)
				return nil
			})),
		)
		out := received(t, r.gc, "orders")

		require.ErrorIs(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: -1}), errBoom)
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM orders"), "rolled back")
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"), "its event with it")

		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: 7}))
		saw, _ := sawCommitted.Load(7)
		assert.Equal(t, true, saw, "the in-process handler saw the committed order")
		msg := next(t, out)
		assert.JSONEq(t, `{"ID":7}`, string(msg.Payload))
		assert.Equal(t, "OrderPlaced", msg.Metadata.Get(fxbus.MetadataName))
		require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 },
			time.Minute, 5*time.Millisecond, "the relay deleted the row it sent")
	})
}

// A call nested in another's unit of work joins it: one transaction, and
// both calls' routed events commit, or roll back, with it.
func TestNestedCallJoinsTheUnitOfWork(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		var m *fxcqrs.Mediator
		var outer, inner any
		r := newRig(t, d, fxoutbox.Config{},
			fxcqrs.WithCommandHandlers(
				commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
					outer = fxoutbox.Tx(ctx)
					fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
					if err := fxcqrs.Exec(ctx, m, Audit{ID: c.ID}); err != nil {
						return err
					}
					if c.ID < 0 {
						return errors.New("outer fails after the nested call")
					}
					return nil
				}),
				commandFunc[Audit](func(ctx context.Context, a Audit) error {
					inner = fxoutbox.Tx(ctx)
					fxcqrs.Emit(ctx, Audited(a))
					return nil
				}),
			),
		)
		m = r.m
		require.Error(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: -2}))
		assert.Same(t, outer, inner, "one transaction")
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"), "the nested call's event rolled back with the outer")

		audit := received(t, r.gc, "audit")
		orders := received(t, r.gc, "orders")
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 3}))
		assert.JSONEq(t, `{"ID":3}`, string(next(t, orders).Payload))
		assert.JSONEq(t, `{"ID":3}`, string(next(t, audit).Payload))
	})
}

type Audit struct{ ID int }

// An event handler's routed follow-ups go through the outbox, in a
// transaction of their own, never published directly.
func TestFollowUpsGoThroughTheOutbox(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		r := newRig(t, d, fxoutbox.Config{},
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
				fxcqrs.Emit(ctx, Audited{ID: e.ID})
				return nil
			})),
		)
		audit := received(t, r.gc, "audit")
		require.NoError(t, fxcqrs.Publish(context.Background(), r.m, OrderPlaced{ID: 4}))
		assert.JSONEq(t, `{"ID":4}`, string(next(t, audit).Payload))
	})
}

// With the inbox, a redelivered message runs each handler once.
func TestInboxHandlesOnce(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		var calls sync.Map
		r := newRig(t, d, fxoutbox.Config{Inbox: true},
			fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
				if fxoutbox.Tx(ctx) == nil {
					return errors.New("no transaction for an inbound message")
				}
				n, _ := calls.LoadOrStore(e.ID, new(int))
				*n.(*int)++
				return nil
			})),
		)
		// Two deliveries of one message, as a broker redelivers.
		deliver := func(id string) {
			msg := message.NewMessage(id, []byte(`{"ID":5}`))
			msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
			require.NoError(t, r.gc.Publish("inbound", msg)) // returns once acknowledged
		}
		deliver("0195f000-0000-7000-8000-000000000001")
		deliver("0195f000-0000-7000-8000-000000000001")
		deliver("0195f000-0000-7000-8000-000000000002")
		n, _ := calls.Load(5)
		assert.Equal(t, 2, *n.(*int), "once per message id")
		assert.Equal(t, 2, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"))
		assert.Equal(t, uint64(1), r.outbox.Stats().InboxDuplicates, "the redelivery, counted")
	})
}

func TestTableNamesAreChecked(t *testing.T) {
	t.Parallel()
	_, err := fxoutbox.Schema(fxoutbox.PostgreSQL, fxoutbox.Tables{Outbox: "outbox; DROP TABLE users"})
	require.ErrorContains(t, err, "table names must be SQL identifiers")
	schema, err := fxoutbox.Schema(fxoutbox.MySQL, fxoutbox.Tables{Outbox: "my_outbox"})
	require.NoError(t, err)
	assert.Contains(t, schema, "CREATE TABLE IF NOT EXISTS `my_outbox`")
}

// An outbox stopped without having started (an application whose start
// failed before its hook, a test's clean-up) returns at once, and does
// not start afterwards.
func TestStopWithoutStart(t *testing.T) {
	d := openDatabase(t, fxoutbox.SQLite)
	b, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, o.Stop(ctx))
	require.NoError(t, o.Start(context.Background()))
	require.NoError(t, o.Stop(ctx))
}
