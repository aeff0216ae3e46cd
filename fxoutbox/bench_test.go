package fxoutbox_test

import (
	"context"
	"database/sql"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// Stamped is the benchmarks' event: when its command ran.
type Stamped struct {
	ID     int   `json:"id"`
	SentAt int64 `json:"sentAt"`
}

// BenchmarkUnitOfWork: commands/s through the unit of work with the
// outbox, against the same transaction without it, on PostgreSQL, in the
// same run. Both insert the order; the outbox also writes its routed
// event in the transaction. The relay is not started: this is the
// command's own cost.
func BenchmarkUnitOfWork(b *testing.B) {
	d := openDatabase(b, fxoutbox.PostgreSQL)
	crashTables(b, d.DB)
	insert := d.Dialect.Rebind("INSERT INTO orders (id) VALUES (?)")
	ctx := context.Background()
	id := 0
	b.Run("transaction only", func(b *testing.B) {
		m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			tx, err := d.DB.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, insert, c.ID); err != nil {
				_ = tx.Rollback()
				return err
			}
			return tx.Commit()
		})))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			id++
			if err := fxcqrs.Exec(ctx, m, PlaceOrder{ID: id}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("outbox", func(b *testing.B) {
		m := outboxMediator(b, d.DB, d.Dialect, insert)
		b.ReportAllocs()
		for b.Loop() {
			id++
			if err := fxcqrs.Exec(ctx, m, PlaceOrder{ID: id}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// outboxMediator is the benchmarks' mediator with the outbox on db: its
// PlaceOrder runs insertOrder in the unit of work and emits OrderPlaced,
// routed to a Go channel. The relay is not started. The mediator and the
// channel are stopped when b ends.
func outboxMediator(b testing.TB, db *sql.DB, dialect fxoutbox.Dialect, insertOrder string) *fxcqrs.Mediator {
	b.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	b.Cleanup(func() { _ = gc.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: gc}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	o, err := fxoutbox.New(db, bus, fxoutbox.Config{Dialect: dialect}, nil)
	if err != nil {
		b.Fatal(err)
	}
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, insertOrder, c.ID); err != nil {
				return err
			}
			fxcqrs.Emit(ctx, OrderPlaced(c))
			return nil
		})))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := m.Stop(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return m
}

// BenchmarkCommitToHandler: commands at a steady 500 per second through
// the outbox on PostgreSQL, relayed over NATS JetStream (a server of the
// benchmark's own) to a subscriber, and the latency from the command to
// the remote handler: p50 and p99 of b.N events.
func BenchmarkCommitToHandler(b *testing.B) {
	d := openDatabase(b, fxoutbox.PostgreSQL)
	ns := startNATS(b)
	const topic = "latency"
	provisionNATS(b, ns.s.ClientURL(), topic)
	pub, sub, err := natsPubSub(ns.s.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	defer pub.Close()
	var (
		mu  sync.Mutex
		lat []time.Duration
		all = make(chan struct{})
	)
	n := b.N
	bus, err := fxbus.New(fxbus.Config{Publisher: pub, Subscriber: sub},
		[]fxbus.Routing{fxbus.NewRoute[Stamped](topic)}, []fxbus.Subscription{fxbus.NewSubscription[Stamped](topic)})
	if err != nil {
		b.Fatal(err)
	}
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	if err != nil {
		b.Fatal(err)
	}
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			fxcqrs.Emit(ctx, Stamped{ID: c.ID, SentAt: time.Now().UnixNano()})
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[Stamped](func(ctx context.Context, e Stamped) error {
			if fxbus.MessageID(ctx) == "" {
				return nil // the local copy
			}
			mu.Lock()
			lat = append(lat, time.Since(time.Unix(0, e.SentAt)))
			if len(lat) == n {
				close(all)
			}
			mu.Unlock()
			return nil
		})),
	)
	if err != nil {
		b.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := bus.Start(context.Background(), m); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = bus.Stop(context.Background())
		_ = m.Stop(context.Background())
		_ = o.Stop(context.Background())
	}()
	tick := time.NewTicker(2 * time.Millisecond) // 500 commands/s
	defer tick.Stop()
	b.ResetTimer()
	for i := range n {
		<-tick.C
		if err := fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: i}); err != nil {
			b.Fatal(err)
		}
	}
	<-all
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
