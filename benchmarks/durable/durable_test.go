package durable

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/require"
)

// Remind is the command a durable order schedules; DueNs is when it is
// due.
type Remind struct {
	ID    int
	DueNs int64
}

type onRemind func(context.Context, Remind) error

func (f onRemind) Handle(ctx context.Context, c Remind) error { return f(ctx, c) }

// service is a mediator with the outbox on d, its relay started, and
// OrderAccepted durable when durable is set; up to 8 event handlers run
// at once.
func service(b *testing.B, d outboxtest.Database, durable bool, opts ...fxcqrs.Option) *fxcqrs.Mediator {
	b.Helper()
	bus, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(b, err)
	cfg := fxoutbox.Config{Dialect: d.Dialect, Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[Remind]()}}
	if durable {
		cfg.Deliverables = append(cfg.Deliverables, fxoutbox.DurableEvent[OrderAccepted]())
	}
	o, err := fxoutbox.New(d.DB, bus, cfg, nil)
	require.NoError(b, err)
	// Durable handlers run under the mediator's limit on event handlers,
	// 1 by default: a service that delivers hundreds a second raises it.
	m, err := fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}},
		append(opts, fxcqrs.WithMiddleware(o.UnitOfWork()))...)
	require.NoError(b, err)
	o.DeliverTo(m)
	require.NoError(b, o.Start(context.Background()))
	b.Cleanup(func() {
		require.NoError(b, m.Stop(context.Background()))
		require.NoError(b, o.Stop(context.Background()))
		require.NoError(b, bus.Stop(context.Background()))
	})
	return m
}

// BenchmarkDurableLatency: open loop at 500 commands/s on PostgreSQL.
// Each command inserts its order, emits OrderAccepted, whose in-process
// handler is durable, and schedules a Remind 50 ms later. "handler" is
// from when the command was due to when the durable handler ran;
// "lateness" from when each Remind was due to when it ran. Run with
// -benchtime 5000x (10 s).
func BenchmarkDurableLatency(b *testing.B) {
	d := ordersDB(b)
	var (
		mu       sync.Mutex
		nextID   int
		handler  *latencies
		lateness *latencies
	)
	record := func(l **latencies, d time.Duration) {
		mu.Lock()
		cur := *l
		mu.Unlock()
		if cur != nil {
			cur.add(d)
		}
	}
	m := service(b, d, true,
		fxcqrs.WithCommandHandlers(
			onPlaceOrder(func(ctx context.Context, c PlaceOrder) error {
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO orders (id) VALUES ($1)", c.ID); err != nil {
					return err
				}
				fxcqrs.Emit(ctx, OrderAccepted(c))
				due := time.Now().Add(50 * time.Millisecond)
				_, err := fxoutbox.Schedule(ctx, due, Remind{ID: c.ID, DueNs: due.UnixNano()})
				return err
			}),
			onRemind(func(_ context.Context, c Remind) error {
				record(&lateness, time.Since(time.Unix(0, c.DueNs)))
				return nil
			})),
		fxcqrs.WithEventHandlers(onOrderAccepted(func(_ context.Context, e OrderAccepted) error {
			record(&handler, time.Since(time.Unix(0, e.At)))
			return nil
		})))
	id := func() int {
		mu.Lock()
		defer mu.Unlock()
		nextID++
		return nextID
	}
	warmUp(b, func() error {
		return fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: id(), At: time.Now().UnixNano()})
	})
	mu.Lock()
	handler, lateness = newLatencies(b.N), newLatencies(b.N)
	h, l := handler, lateness
	mu.Unlock()
	b.ResetTimer()
	openLoop(b.N, 500, func(at time.Time) {
		if err := fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: id(), At: at.UnixNano()}); err != nil {
			b.Error(err)
		}
	})
	for _, lat := range []*latencies{h, l} {
		select {
		case <-lat.full:
		case <-time.After(time.Minute):
			b.Fatal("not every durable handler or schedule ran within a minute")
		}
	}
	b.StopTimer()
	h.report(b, "handler")
	l.report(b, "lateness")
}

// BenchmarkDurableCost: what a durable in-process event costs against an
// in-memory one, on PostgreSQL, closed loop with 8 callers: each command
// inserts its order and emits OrderAccepted, whose handler runs in memory
// after the commit ("memory") or from its row, in a transaction with its
// inbox record ("durable"). The time per op is until every handler has
// run.
func BenchmarkDurableCost(b *testing.B) {
	d := ordersDB(b)
	var (
		idMu sync.Mutex
		ids  int
	)
	for _, durable := range []bool{false, true} {
		name := map[bool]string{false: "memory", true: "durable"}[durable]
		b.Run(name, func(b *testing.B) {
			done := newLatencies(b.N)
			m := service(b, d, durable,
				fxcqrs.WithCommandHandlers(onPlaceOrder(func(ctx context.Context, c PlaceOrder) error {
					if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO orders (id) VALUES ($1)", c.ID); err != nil {
						return err
					}
					fxcqrs.Emit(ctx, OrderAccepted(c))
					return nil
				})),
				fxcqrs.WithEventHandlers(onOrderAccepted(func(context.Context, OrderAccepted) error {
					done.add(0)
					return nil
				})))
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					idMu.Lock()
					ids++
					id := ids
					idMu.Unlock()
					if err := fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: id}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			<-done.full
			b.StopTimer()
		})
	}
}
