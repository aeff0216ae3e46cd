package fxoutbox_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Shipped is a durable event: its in-process handlers run from a row.
type Shipped struct{ ID int }

// Chained is a durable event whose handler emits another, without end.
type Chained struct{ N int }

// tagged is a handler type per tag: the inbox knows a handler by its
// type's name, so two handlers of one event need two types.
type tagged[Tag, E any] func(context.Context, E) error

func (f tagged[Tag, E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

type (
	tagGated struct{}
	tagB     struct{}
	tagFlaky struct{}
)

// fakeClock is the outbox's clock in tests (see outboxtest.Clock).
type fakeClock = outboxtest.Clock

func newFakeClock() *fakeClock {
	return outboxtest.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
}

// projection creates the table durable handlers write to.
func projection(t *testing.T, d database) {
	t.Helper()
	for _, ddl := range []string{
		"CREATE TABLE orders (id INTEGER PRIMARY KEY)",
		"CREATE TABLE shipped (handler VARCHAR(64) NOT NULL, id INTEGER NOT NULL)",
	} {
		_, err := d.DB.Exec(ddl)
		require.NoError(t, err)
	}
}

// A durable event's handlers run from its row after the commit, each once
// with its effect in the inbox's transaction; a rolled-back command's
// event never runs; Exec does not wait for them; the handlers see the
// row's message id; the row is deleted when every handler has it.
func TestDurableEvent(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		projection(t, d)
		insertShipped := d.Dialect.Rebind("INSERT INTO shipped (handler, id) VALUES (?, ?)")
		release := make(chan struct{})
		var ids sync.Map
		gated := tagged[tagGated, Shipped](func(ctx context.Context, e Shipped) error {
			<-release
			ids.Store("gated", fxbus.MessageID(ctx))
			_, err := fxoutbox.Tx(ctx).ExecContext(ctx, insertShipped, "gated", e.ID)
			return err
		})
		r := newRig(t, d, fxoutbox.Config{Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Shipped]()}},
			fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, d.Dialect.Rebind("INSERT INTO orders (id) VALUES (?)"), c.ID); err != nil {
					return err
				}
				fxcqrs.Emit(ctx, Shipped(c))
				if c.ID < 0 {
					return errors.New("refused")
				}
				return nil
			})),
			fxcqrs.WithEventHandlers(gated, projectionB(insertShipped)))
		require.Error(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: -1}))
		// Exec returns while a handler is still held: the caller does not
		// wait for durable handlers.
		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: 7}))
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM orders"))
		close(release)
		require.Eventually(t, func() bool {
			return count(t, d.DB, "SELECT COUNT(*) FROM shipped") == 2 && count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0
		}, time.Minute, 5*time.Millisecond)
		assert.Equal(t, 2, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox"), "each handler recorded with its effect")
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM shipped WHERE id < 0"), "a rolled-back command's event never runs")
		id, _ := ids.Load("gated")
		assert.NotEmpty(t, id, "the handler sees the row's message id, its idempotency key")
	})
}

func projectionB(insert string) tagged[tagB, Shipped] {
	return func(ctx context.Context, e Shipped) error {
		_, err := fxoutbox.Tx(ctx).ExecContext(ctx, insert, "b", e.ID)
		return err
	}
}

// A failed durable handler is retried, with the handlers that succeeded
// not run again; one that keeps failing goes to the dead letter table
// with its error after MaxAttempts; a runaway chain of durable events
// stops at fxcqrs.MaxDepth.
func TestDurableRetriesAndDeadLetters(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		projection(t, d)
		insertShipped := d.Dialect.Rebind("INSERT INTO shipped (handler, id) VALUES (?, ?)")
		var flaky, chained atomic.Int32
		r := newRig(t, d, fxoutbox.Config{
			Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Shipped](), fxoutbox.DurableEvent[Chained]()},
			Delivery:     fxoutbox.DeliveryConfig{MaxAttempts: 3, RetryInitial: time.Millisecond, RetryMax: time.Millisecond},
		},
			fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
				if c.ID == 0 {
					fxcqrs.Emit(ctx, Chained{N: 1})
					return nil
				}
				fxcqrs.Emit(ctx, Shipped(c))
				return nil
			})),
			fxcqrs.WithEventHandlers(
				projectionB(insertShipped),
				tagged[tagFlaky, Shipped](func(ctx context.Context, e Shipped) error {
					if e.ID == 2 {
						return errors.New("always fails")
					}
					if flaky.Add(1) < 3 {
						return errors.New("fails twice")
					}
					_, err := fxoutbox.Tx(ctx).ExecContext(ctx, insertShipped, "flaky", e.ID)
					return err
				}),
				eventFunc[Chained](func(ctx context.Context, e Chained) error {
					chained.Add(1)
					fxcqrs.Emit(ctx, Chained{N: e.N + 1})
					return nil
				})))
		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: 1}))
		require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM shipped WHERE id = 1") == 2 },
			time.Minute, 5*time.Millisecond)
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM shipped WHERE id = 1 AND handler = 'b'"), "the handler that succeeded ran once")
		assert.Equal(t, int32(3), flaky.Load(), "two failures, then its effect")

		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: 2}))
		require.NoError(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: 0}))
		require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead") == 2 },
			time.Minute, 5*time.Millisecond)
		var reason string
		require.NoError(t, d.DB.QueryRow("SELECT error FROM fxcqrs_outbox_dead WHERE metadata LIKE '%Shipped%'").Scan(&reason))
		assert.Contains(t, reason, "always fails")
		require.NoError(t, d.DB.QueryRow("SELECT error FROM fxcqrs_outbox_dead WHERE metadata LIKE '%Chained%'").Scan(&reason))
		assert.Contains(t, reason, fxcqrs.ErrMaxDepth.Error())
		assert.Equal(t, int32(fxcqrs.MaxDepth-1+3), chained.Load(),
			"each link up to MaxDepth ran once, then the last one failed its 3 attempts: its follow-up would be too deep")
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM shipped WHERE id = 2"), "the good handler of the dead row ran once")
		assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"))
	})
}

// Config.Deliverables without a mediator to deliver to fails at Start,
// saying what to do; two types with one name fail at New.
func TestDeliverablesAreChecked(t *testing.T) {
	d := openDatabase(t, fxoutbox.SQLite)
	b, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect, Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Shipped]()}}, nil)
	require.NoError(t, err)
	err = o.Start(context.Background())
	require.ErrorContains(t, err, "DeliverTo")
	type any2 interface{ M() }
	_, err = fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect, Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[any2]()}}, nil)
	require.ErrorContains(t, err, "interface type")
	_, err = fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect, Deliverables: []fxoutbox.Deliverable{{}}}, nil)
	require.ErrorContains(t, err, "zero Deliverable")
}

// A batch of durable deliveries that outlasts the relay's lease (handlers
// are slower than a broker's acknowledgement) still deletes what it
// delivered: the relay renews the lease before its fenced delete, instead
// of sending the whole batch again.
func TestDurableBatchOutlastsTheLease(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	clock := newFakeClock()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var deliveries atomic.Int32
	r := newRig(t, d, fxoutbox.Config{
		Now:          clock.Now,
		Relay:        fxoutbox.RelayConfig{Lease: time.Second},
		Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Shipped]()},
	},
		fxcqrs.WithMiddleware(fxcqrs.ForKinds(fxcqrs.MiddlewareFunc(func(ctx context.Context, c fxcqrs.Call, next fxcqrs.Next) (any, error) {
			deliveries.Add(1) // every delivery, before the inbox decides
			return next(ctx)
		}), fxcqrs.KindEvent)),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			fxcqrs.Emit(ctx, Shipped(c))
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(context.Context, Shipped) error {
			once.Do(func() { close(started) })
			<-release
			return nil
		})))
	require.NoError(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: 1}))
	<-started
	clock.Advance(3 * time.Second) // the lease the batch was read under has lapsed
	close(release)
	require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 }, time.Minute, time.Millisecond)
	passesWithout(t, r.outbox, 3)
	assert.Equal(t, int32(1), deliveries.Load(), "delivered once: the batch's delete was not fenced out")
}

// DeliveryConfig.AllEvents, the module-wide default: every event type
// with handlers is durable without being registered, and runs from a row.
func TestDurableAllEvents(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	ids := make(chan string, 1)
	r := newRig(t, d, fxoutbox.Config{Delivery: fxoutbox.DeliveryConfig{AllEvents: true}},
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			fxcqrs.Emit(ctx, Shipped(c))
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(ctx context.Context, _ Shipped) error {
			ids <- fxbus.MessageID(ctx)
			return nil
		})))
	require.NoError(t, fxcqrs.Exec(context.Background(), r.m, PlaceOrder{ID: 1}))
	select {
	case id := <-ids:
		assert.NotEmpty(t, id, "run from a row: it has the row's message id")
	case <-time.After(time.Minute):
		t.Fatal("not delivered")
	}
	require.Eventually(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_inbox") == 1 }, time.Minute, time.Millisecond)
}

// Slow is a durable event whose handler waits until the test lets it go.
type Slow struct{ ID int }

// A durable row committed while another row's handler is still running
// does not wait for it: the relay reads the rows its process's commits
// announce while a batch is delivered, and starts them in the places
// left. Before, a batch waited for its slowest delivery.
func TestDurableRowDoesNotWaitForTheBatch(t *testing.T) {
	t.Parallel()
	// Not SQLite: there the first handler's transaction holds the one
	// write lock, and the second command cannot commit at all.
	d := openDatabase(t, fxoutbox.PostgreSQL)
	bus, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, bus.Stop(context.Background())) })
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{
		Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{PollInterval: time.Hour},
		Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Slow](), fxoutbox.DurableEvent[Shipped]()},
	}, nil)
	require.NoError(t, err)
	entered, release, shipped := make(chan struct{}), make(chan struct{}), make(chan int, 1)
	m, err := fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 4}},
		fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			if c.ID == 1 {
				fxcqrs.Emit(ctx, Slow{ID: 1})
			} else {
				fxcqrs.Emit(ctx, Shipped{ID: c.ID})
			}
			return nil
		})),
		fxcqrs.WithEventHandlers(
			eventFunc[Slow](func(context.Context, Slow) error {
				close(entered)
				<-release
				return nil
			}),
			eventFunc[Shipped](func(_ context.Context, e Shipped) error { shipped <- e.ID; return nil }),
		))
	require.NoError(t, err)
	o.DeliverTo(m)
	require.NoError(t, o.Start(context.Background()))
	t.Cleanup(func() {
		require.NoError(t, m.Stop(context.Background()))
		require.NoError(t, o.Stop(context.Background()))
	})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	t.Cleanup(letGo) // first, should the test fail while the handler waits
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	<-entered
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 2}))
	select {
	case id := <-shipped:
		assert.Equal(t, 2, id)
	case <-time.After(time.Minute):
		t.Fatal("the second row waited for the first row's handler")
	}
	letGo()
	waitFor(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 })
}

// The inbox knows a handler by its type's name: two handlers of one type
// of an event it records are refused at Start, naming the type, where
// the second would otherwise be skipped for every message as a
// redelivery of the first; without the inbox, or for an event it does
// not record, they are fine.
func TestTwoHandlersOfOneTypeUnderTheInbox(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	start := func(cfg fxoutbox.Config) error {
		bus, err := fxbus.New(fxbus.Config{}, nil, nil)
		require.NoError(t, err)
		cfg.Dialect = d.Dialect
		o, err := fxoutbox.New(d.DB, bus, cfg, nil)
		require.NoError(t, err)
		m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()), fxcqrs.WithEventHandlers(
			eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return nil }),
			eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return nil }),
			eventFunc[Shipped](func(context.Context, Shipped) error { return nil }),
		))
		require.NoError(t, err)
		o.DeliverTo(m)
		err = o.Start(context.Background())
		require.NoError(t, o.Stop(context.Background()))
		return err
	}
	err := start(fxoutbox.Config{Inbox: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "OrderPlaced has two handlers of one type")
	assert.Contains(t, err.Error(), "eventFunc[")
	assert.NotContains(t, err.Error(), "Shipped", "one handler of Shipped")
	require.NoError(t, start(fxoutbox.Config{}), "no inbox, no durable event: both run")
	require.NoError(t, start(fxoutbox.Config{Deliverables: []fxoutbox.Deliverable{fxoutbox.DurableEvent[Shipped]()}}),
		"a durable event with one handler")
}
