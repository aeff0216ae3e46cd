package fxsaga_test

import (
	"context"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	nc "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// Sagas that wait, on PostgreSQL and NATS JetStream: an orders service
// (fx, the outbox with the inbox, the saga module) whose saga reserves,
// waits for Paid, and ships; Paid published to its topic as another
// service would (a bus of its own, straight to the broker).
//
//	go test -run '^$' -bench WaitingSaga -benchtime 500x
//
// resume: one saga at a time, the time from Paid's publish to the commit
// of the step after the wait (p50, p99), with no other saga waiting and
// with 100,000 (rows the resume must not scan; heap-MiB is the process's live
// heap after the run, which they must not grow: compare the two of one
// run). Its baseline
// is the same bus, inbox and outbox without sagas: the event's handler
// writes a row with its inbox record, and a command writes another once
// that committed.
//
// deadline: the lateness of the deadline, from the saga's Until to its
// compensation's start (p50, p99). Its baseline: a command scheduled for
// a time, from that time to its handler's start.
//
// throughput: sagas made to wait per second by 16 callers, then resumed
// per second by 16 publishers, at one replica and at two, each with 16
// event handlers at once (the mediator's default is 1: one resume at a
// time). One op is one saga.

// mark is when something happened to an order.
type mark struct {
	order int
	at    time.Time
}

// signalling is a step that writes a row in its transaction, as the
// baseline's handlers do, and whose Act or Compensate, once its
// transaction committed, sends the order and the time on a channel.
type signalling struct {
	d                  database
	acted, compensated chan<- mark
}

func (s signalling) write(ctx context.Context, o *Order) error {
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.d.Dialect.Rebind("INSERT INTO effects (saga_key, order_id) VALUES (?, ?)"), fxsaga.IdempotencyKey(ctx), o.ID)
	return err
}

func (s signalling) Act(ctx context.Context, o *Order) error {
	if err := s.write(ctx, o); err != nil {
		return err
	}
	return signal(ctx, s.acted, o.ID)
}

func (s signalling) Compensate(ctx context.Context, o *Order) error {
	if s.compensated != nil {
		s.compensated <- mark{o.ID, time.Now()}
	}
	return s.write(ctx, o)
}

func signal(ctx context.Context, ch chan<- mark, order int) error {
	if ch == nil {
		return nil
	}
	return fxoutbox.AfterCommit(ctx, func(context.Context) { ch <- mark{order, time.Now()} })
}

type waitBench struct {
	d       database
	addr    string
	topic   string
	within  time.Duration
	shipped chan mark
	undone  chan mark
}

// replica starts one orders service; it stops when b ends.
func (w *waitBench) replica(b *testing.B) (*fxsaga.Runner, *fxsaga.Saga[Order]) {
	b.Helper()
	ps, err := natsjs.New(natsjs.Config{URL: w.addr, Group: "orders"})
	require.NoError(b, err)
	var (
		runner *fxsaga.Runner
		saga   *fxsaga.Saga[Order]
	)
	db, dialect := w.d.DB, w.d.Dialect
	app := fx.New(fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module,
		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 16}}), // resumes in parallel
		fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher))), fx.Annotate(ps, fx.As(new(message.Subscriber)))),
		fx.Supply(db, fxoutbox.Config{Dialect: dialect, Inbox: true}),
		fx.Provide(func() (fxsaga.Store, error) { return fxsaga.NewSQL(db, dialect, fxsaga.Tables{}, 0) }),
		fxsaga.Register[Order](func() *fxsaga.Saga[Order] {
			return fxsaga.Define[Order]("bench wait",
				signalling{d: w.d, compensated: w.undone},
				fxsaga.Await(fxsaga.Wait[Order, Paid]{
					Key:    func(o *Order) string { return strconv.Itoa(o.ID) },
					Match:  func(p Paid) string { return p.OrderID },
					Within: w.within,
				}),
				signalling{d: w.d, acted: w.shipped},
			)
		}),
		fxbus.Subscribe[Paid](w.topic, fxbus.InFlight(32)),
		fxsaga.Resume[Paid](),
		fx.Populate(&runner, &saga),
	)
	require.NoError(b, app.Start(context.Background()))
	b.Cleanup(func() {
		require.NoError(b, app.Stop(context.Background()))
		_ = ps.Close()
	})
	return runner, saga
}

type (
	// shipOrder is the baseline's second transaction.
	shipOrder struct{ ID int }
	// scheduleLater schedules Later at At: the baseline of a deadline.
	scheduleLater struct {
		ID int
		At time.Time
	}
	// Later is the baseline's scheduled command.
	Later struct {
		ID int
		At time.Time
	}
)

type commandHandler[C any] func(context.Context, C) error

func (f commandHandler[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

// plain is the baseline service: the same outbox, inbox and bus, without
// sagas. Paid's handler writes a row in the transaction of its inbox
// record and, once that committed, a command writes another in one of
// its own (what a resume and the step after it are); scheduleLater
// schedules a command (what a saga's deadline is).
func (w *waitBench) plain(b *testing.B) *fxcqrs.Mediator {
	b.Helper()
	ps, err := natsjs.New(natsjs.Config{URL: w.addr, Group: "orders"})
	require.NoError(b, err)
	db, dialect := w.d.DB, w.d.Dialect
	insert := dialect.Rebind("INSERT INTO effects (saga_key, order_id) VALUES (?, ?)")
	var m *fxcqrs.Mediator
	app := fx.New(fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 16}}),
		fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher))), fx.Annotate(ps, fx.As(new(message.Subscriber)))),
		fx.Supply(db, fxoutbox.Config{Dialect: dialect, Inbox: true}),
		fxbus.Subscribe[Paid](w.topic, fxbus.InFlight(32)),
		fxoutbox.Schedulable[Later](),
		fxcqrs.AsEventHandler(func(m *fxcqrs.Mediator) eventHandler[Paid] {
			return func(ctx context.Context, p Paid) error {
				id, _ := strconv.Atoi(p.OrderID)
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, insert, "paid:"+p.OrderID, id); err != nil {
					return err
				}
				return fxoutbox.AfterCommit(ctx, func(ctx context.Context) {
					if err := fxcqrs.Exec(ctx, m, shipOrder{ID: id}); err != nil {
						b.Error(err)
					}
				})
			}
		}),
		fxcqrs.AsCommandHandler(func() commandHandler[shipOrder] {
			return func(ctx context.Context, c shipOrder) error {
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, insert, "ship:"+strconv.Itoa(c.ID), c.ID); err != nil {
					return err
				}
				return signal(ctx, w.shipped, c.ID)
			}
		}),
		fxcqrs.AsCommandHandler(func() commandHandler[scheduleLater] {
			return func(ctx context.Context, c scheduleLater) error {
				_, err := fxoutbox.Schedule(ctx, c.At, Later(c))
				return err
			}
		}),
		fxcqrs.AsCommandHandler(func() commandHandler[Later] {
			return func(_ context.Context, c Later) error {
				w.undone <- mark{c.ID, time.Now()}
				return nil
			}
		}),
		fx.Populate(&m),
	)
	require.NoError(b, app.Start(context.Background()))
	b.Cleanup(func() {
		require.NoError(b, app.Stop(context.Background()))
		_ = ps.Close()
	})
	return m
}

// payer publishes Paid as the payment service would.
func (w *waitBench) payer(b *testing.B) *fxbus.Bus {
	b.Helper()
	ps, err := natsjs.New(natsjs.Config{URL: w.addr})
	require.NoError(b, err)
	b.Cleanup(func() { _ = ps.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: ps}, []fxbus.Routing{fxbus.NewRoute[Paid](w.topic)}, nil)
	require.NoError(b, err)
	return bus
}

func newWaitBench(b *testing.B, within time.Duration) *waitBench {
	b.Helper()
	addr := outboxtest.Env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	u, err := url.Parse(addr)
	require.NoError(b, err)
	outboxtest.Reachable(b, "FXCQRS_NATS_URL", u.Host)
	d := openDatabase(b, fxoutbox.PostgreSQL)
	for _, ddl := range []string{
		"CREATE TABLE calls (seq BIGSERIAL PRIMARY KEY, order_id BIGINT NOT NULL, step VARCHAR(16) NOT NULL, action VARCHAR(16) NOT NULL, saga_key VARCHAR(128) NOT NULL)",
		"CREATE TABLE effects (saga_key VARCHAR(128) PRIMARY KEY, order_id BIGINT NOT NULL)",
	} {
		_, err := d.DB.Exec(ddl)
		require.NoError(b, err)
	}
	w := &waitBench{
		d: d, addr: addr, topic: "bench_paid_" + strconv.FormatInt(time.Now().UnixNano(), 36), within: within,
		shipped: make(chan mark, 1<<16), undone: make(chan mark, 1<<16),
	}
	b.Cleanup(func() {
		if conn, err := nc.Connect(addr); err == nil {
			if js, err := conn.JetStream(); err == nil {
				_ = js.DeleteStream(w.topic)
			}
			conn.Close()
		}
	})
	return w
}

func BenchmarkWaitingSaga(b *testing.B) {
	ctx := context.Background()
	for _, others := range []int{0, 100_000} {
		b.Run("resume/waiting="+strconv.Itoa(others), func(b *testing.B) {
			w := newWaitBench(b, time.Hour)
			// Other sagas waiting, as rows: what a resume must not scan,
			// and what the process must not hold.
			_, err := w.d.DB.ExecContext(ctx, `INSERT INTO fxcqrs_sagas (id, name, status, step, context, version, awaiting, correlation, deadline_ns)
				SELECT 'other-' || g, 'bench wait', 'WAITING', 1, '{"ID":-1}', 2, 'fxsaga_test.Paid', 'other-' || g, $1::bigint + g
				FROM generate_series(1, $2::int) g`, time.Now().Add(time.Hour).UnixNano(), others)
			require.NoError(b, err)
			_, err = w.d.DB.ExecContext(ctx, "ANALYZE fxcqrs_sagas")
			require.NoError(b, err)
			r, s := w.replica(b)
			payer := w.payer(b)
			require.NoError(b, fxsaga.Recover(ctx, r, s)) // what the module does at start
			lat := make([]time.Duration, 0, b.N)
			for i := range b.N {
				_, err := fxsaga.Run(ctx, r, s, Order{ID: i})
				requirePending(b, err)
				start := time.Now()
				require.NoError(b, payer.Forward(ctx, []any{Paid{OrderID: strconv.Itoa(i), Payment: "p"}}))
				m := <-w.shipped
				require.Equal(b, i, m.order)
				lat = append(lat, m.at.Sub(start))
			}
			reportPercentiles(b, lat)
			b.ReportMetric(float64(heap())/(1<<20), "heap-MiB")
		})
	}
	b.Run("resume/baseline", func(b *testing.B) {
		w := newWaitBench(b, time.Hour)
		w.plain(b)
		payer := w.payer(b)
		lat := make([]time.Duration, 0, b.N)
		for i := range b.N {
			start := time.Now()
			require.NoError(b, payer.Forward(ctx, []any{Paid{OrderID: strconv.Itoa(i), Payment: "p"}}))
			m := <-w.shipped
			require.Equal(b, i, m.order)
			lat = append(lat, m.at.Sub(start))
		}
		reportPercentiles(b, lat)
	})
	b.Run("deadline/baseline", func(b *testing.B) {
		w := newWaitBench(b, time.Hour)
		m := w.plain(b)
		late := make([]time.Duration, 0, b.N)
		for i := range b.N {
			at := time.Now().Add(50 * time.Millisecond)
			require.NoError(b, fxcqrs.Exec(ctx, m, scheduleLater{ID: i, At: at}))
			mk := <-w.undone
			require.Equal(b, i, mk.order)
			late = append(late, mk.at.Sub(at))
		}
		reportPercentiles(b, late)
	})
	b.Run("deadline", func(b *testing.B) {
		w := newWaitBench(b, 50*time.Millisecond)
		r, s := w.replica(b)
		late := make([]time.Duration, 0, b.N)
		for i := range b.N {
			_, err := fxsaga.Run(ctx, r, s, Order{ID: i})
			pending := requirePending(b, err)
			m := <-w.undone
			require.Equal(b, i, m.order)
			late = append(late, m.at.Sub(pending.Until))
		}
		reportPercentiles(b, late)
	})
	for _, replicas := range []int{1, 2} {
		b.Run("throughput/replicas="+strconv.Itoa(replicas), func(b *testing.B) {
			w := newWaitBench(b, time.Hour)
			type rs struct {
				r *fxsaga.Runner
				s *fxsaga.Saga[Order]
			}
			var services []rs
			for range replicas {
				r, s := w.replica(b)
				services = append(services, rs{r, s})
			}
			payer := w.payer(b)
			b.ResetTimer()
			start := time.Now()
			parallel(b, 16, b.N, func(i int) {
				svc := services[i%replicas]
				_, err := fxsaga.Run(ctx, svc.r, svc.s, Order{ID: i})
				requirePending(b, err)
			})
			made := time.Since(start)
			start = time.Now()
			parallel(b, 16, b.N, func(i int) {
				require.NoError(b, payer.Forward(ctx, []any{Paid{OrderID: strconv.Itoa(i), Payment: "p"}}))
			})
			for range b.N {
				<-w.shipped
			}
			resumed := time.Since(start)
			b.ReportMetric(float64(b.N)/made.Seconds(), "waiting/s")
			b.ReportMetric(float64(b.N)/resumed.Seconds(), "resumed/s")
		})
	}
}

// heap is the live heap after a collection, in bytes.
func heap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func requirePending(b *testing.B, err error) *fxsaga.Pending {
	b.Helper()
	pending, ok := err.(*fxsaga.Pending) //nolint:errorlint // Run returns it bare
	require.True(b, ok, "not waiting: %v", err)
	return pending
}

// parallel runs f(0…n-1) on workers goroutines.
func parallel(b *testing.B, workers, n int, f func(i int)) {
	b.Helper()
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func reportPercentiles(b *testing.B, ds []time.Duration) {
	b.Helper()
	slices.Sort(ds)
	at := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
