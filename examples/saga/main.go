// Command saga places an order as a saga that waits for another service.
// Two services run in this program, each with its own SQLite database and
// outbox, talking through the in-process broker:
//
//	orders:   reserve stock; request the payment and wait for it (30m); book a courier
//	payments: PaymentRequested → charges the card → PaymentConfirmed
//
// The saga holds nothing while it waits: fxsaga.Run returns at once, and
// the PaymentConfirmed that arrives resumes it. Each step commits with
// its writes (the outbox's unit of work); the payment's wait commits with
// the request that leaves for the payment service, so the answer cannot
// come before the saga waits for it.
//
//	go run ./examples/saga
//	go run ./examples/saga -no-payment      # the customer never pays: at the deadline the saga compensates
//	go run ./examples/saga -fail-shipping   # the courier refuses: the payment is refunded, the stock released
//	go run ./examples/saga -mermaid         # the saga as a Mermaid flowchart
//
// It needs no server: SQLite files in a temporary directory and the
// in-process broker of fxbus. The payment deadline is 30 minutes, on the
// clock the run is given; this command gives it -deadline (2s by
// default) so that -no-payment ends soon.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	fxbus "github.com/fxcqrs/fxcqrs/bus"
	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	fxsaga "github.com/fxcqrs/fxcqrs/saga"
	"go.uber.org/fx"
	_ "modernc.org/sqlite"
)

// Order is the saga's context: what the steps know and leave for the next.
type Order struct {
	ID       int    `json:"id"`
	SKU      string `json:"sku"`
	Cents    int    `json:"cents"`
	Payment  string `json:"payment,omitempty"`
	Shipment string `json:"shipment,omitempty"`
}

// The messages between the services, as both know them.
type (
	// PaymentRequested leaves orders for payments.
	PaymentRequested struct {
		OrderID int `json:"orderId"`
		Cents   int `json:"cents"`
	}
	// PaymentConfirmed leaves payments for orders: it resumes the saga.
	PaymentConfirmed struct {
		OrderID int    `json:"orderId"`
		Payment string `json:"payment"`
	}
	// RefundRequested leaves orders for payments when a paid order is
	// compensated.
	RefundRequested struct {
		Payment string `json:"payment"`
	}
	// OrderSettled is the orders service's own event when the saga ends,
	// either way.
	OrderSettled struct{ ID int }
)

// out is where the services say what they did, a line at a time.
type out struct {
	mu *sync.Mutex
	w  io.Writer
}

func (o out) printf(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, format+"\n", args...)
}

// ReserveStock takes one unit of the order's SKU.
type ReserveStock struct{ out out }

// NewReserveStock is the step's constructor: any dependency will do.
func NewReserveStock(o out) *ReserveStock { return &ReserveStock{o} }

// Act reserves a unit, in the step's transaction.
func (s *ReserveStock) Act(ctx context.Context, o *Order) error {
	res, err := fxoutbox.Tx(ctx).ExecContext(ctx, "UPDATE stock SET qty = qty - 1 WHERE sku = ? AND qty > 0", o.SKU)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s is out of stock", o.SKU)
	}
	s.out.printf("orders:   act  reserve stock: one %s", o.SKU)
	return nil
}

// Compensate releases the unit; the saga is over.
func (s *ReserveStock) Compensate(ctx context.Context, o *Order) error {
	if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "UPDATE stock SET qty = qty + 1 WHERE sku = ?", o.SKU); err != nil {
		return err
	}
	s.out.printf("orders:   undo reserve stock: one %s back", o.SKU)
	fxcqrs.Emit(ctx, OrderSettled{ID: o.ID})
	return nil
}

// RequestPayment asks the payment service for the order's amount; the
// saga then waits for its PaymentConfirmed (see NewOrderSaga).
type RequestPayment struct{ out out }

// NewRequestPayment is the step's constructor.
func NewRequestPayment(o out) *RequestPayment { return &RequestPayment{o} }

// Act emits the request, routed to the payment service through the
// outbox: it leaves once the saga is saved waiting.
func (s *RequestPayment) Act(ctx context.Context, o *Order) error {
	fxcqrs.Emit(ctx, PaymentRequested{OrderID: o.ID, Cents: o.Cents})
	s.out.printf("orders:   act  request payment: %d cents; the saga waits for PaymentConfirmed", o.Cents)
	return nil
}

// Compensate refunds the payment if it came, and withdraws the request if
// it did not.
func (s *RequestPayment) Compensate(ctx context.Context, o *Order) error {
	if o.Payment == "" {
		s.out.printf("orders:   undo request payment: never paid, nothing to refund")
		return nil
	}
	fxcqrs.Emit(ctx, RefundRequested{Payment: o.Payment})
	s.out.printf("orders:   undo request payment: refund of %s requested", o.Payment)
	return nil
}

// BookCourier books the parcel; it fails when the courier refuses.
type BookCourier struct {
	out    out
	refuse bool
}

// Courier says whether the courier refuses (the -fail-shipping flag).
type Courier struct{ Refuses bool }

// NewBookCourier is the step's constructor.
func NewBookCourier(o out, c Courier) *BookCourier { return &BookCourier{o, c.Refuses} }

// Act books the courier, once per idempotency key.
func (s *BookCourier) Act(ctx context.Context, o *Order) error {
	if s.refuse {
		s.out.printf("orders:   act  book courier: refused")
		return errors.New("no courier today")
	}
	o.Shipment = fmt.Sprintf("parcel-%d", o.ID)
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO shipments (key, parcel) VALUES (?, ?)", fxsaga.IdempotencyKey(ctx), o.Shipment)
	if err != nil {
		return err
	}
	s.out.printf("orders:   act  book courier: %s", o.Shipment)
	fxcqrs.Emit(ctx, OrderSettled{ID: o.ID})
	return nil
}

// Compensate cancels the booking. Nothing follows this step to fail, but
// recovery can call it should the saga have been compensating when it
// crashed.
func (s *BookCourier) Compensate(ctx context.Context, o *Order) error {
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "DELETE FROM shipments WHERE parcel = ?", o.Shipment)
	return err
}

// Deadline is how long the saga waits for the payment.
type Deadline time.Duration

// NewOrderSaga defines the saga from its steps, which fx makes.
func NewOrderSaga(r *ReserveStock, p *RequestPayment, b *BookCourier, within Deadline) *fxsaga.Saga[Order] {
	return fxsaga.Define[Order]("order",
		r,
		fxsaga.Await(fxsaga.Wait[Order, PaymentConfirmed]{
			Name:   "RequestPayment",
			Step:   p,
			Key:    func(o *Order) string { return strconv.Itoa(o.ID) },
			Match:  func(e PaymentConfirmed) string { return strconv.Itoa(e.OrderID) },
			Within: time.Duration(within),
			Then: func(_ context.Context, o *Order, e PaymentConfirmed) error {
				o.Payment = e.Payment
				return nil
			},
		}),
		b,
	)
}

// Clock is the time both services' outboxes and the saga runner read.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// options are what a run varies.
type options struct {
	refuseShipping bool
	noPayment      bool
	deadline       time.Duration
	clock          Clock
	// waiting, if set, is called once Run has returned the saga waiting
	// (a test moves its clock there).
	waiting func()
}

// openDB opens the SQLite database name in dir and creates its tables:
// the service's own (schema) and those of the modules it runs.
func openDB(dir, name string, schema []string, saga bool) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, name)+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	for _, q := range schema {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, errors.Join(err, db.Close())
		}
	}
	if err := fxoutbox.Migrate(ctx, db, fxoutbox.SQLite, fxoutbox.Tables{}); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if saga {
		if err := fxsaga.Migrate(ctx, db, fxoutbox.SQLite, fxsaga.Tables{}); err != nil {
			return nil, errors.Join(err, db.Close())
		}
	}
	return db, nil
}

// outboxConfig is each service's: the inbox on (each message handled
// once), the run's clock, a short poll for the other replica's rows.
func outboxConfig(c Clock) fxoutbox.Config {
	return fxoutbox.Config{
		Dialect: fxoutbox.SQLite, Inbox: true, Now: c.Now, After: c.After,
		Relay: fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond},
	}
}

// paymentsApp is the payment service: it charges what is requested and
// confirms it, unless the customer never pays; refunded receives each
// payment it refunds.
func paymentsApp(db *sql.DB, o out, opts options, refunded chan<- string) *fx.App {
	return fx.New(
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(db, outboxConfig(opts.clock)),
		fxbus.Subscribe[PaymentRequested]("payments.requests"),
		fxbus.Subscribe[RefundRequested]("payments.refunds"),
		fxbus.Route[PaymentConfirmed]("payments.confirmed"),
		fxcqrs.AsEventHandler(func() eventFunc[PaymentRequested] {
			return func(ctx context.Context, e PaymentRequested) error {
				if opts.noPayment {
					o.printf("payments: order %d: %d cents requested; the customer never pays", e.OrderID, e.Cents)
					return nil
				}
				payment := fmt.Sprintf("pay-%d", e.OrderID)
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO payments (payment, cents) VALUES (?, ?)", payment, e.Cents); err != nil {
					return err
				}
				o.printf("payments: order %d: %d cents charged (%s)", e.OrderID, e.Cents, payment)
				fxcqrs.Emit(ctx, PaymentConfirmed{OrderID: e.OrderID, Payment: payment})
				return nil
			}
		}),
		// It says nothing of the refund here: that would race with the
		// saga's next compensation in the output. The report shows it.
		fxcqrs.AsEventHandler(func() eventFunc[RefundRequested] {
			return func(ctx context.Context, e RefundRequested) error {
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "UPDATE payments SET refunded = 1 WHERE payment = ?", e.Payment); err != nil {
					return err
				}
				return fxoutbox.AfterCommit(ctx, func(context.Context) { refunded <- e.Payment })
			}
		}),
	)
}

// ordersApp is the orders service: it runs the saga, which the payment
// service's PaymentConfirmed resumes; settled receives each order whose
// saga ended.
func ordersApp(db *sql.DB, o out, opts options, settled chan<- int, runner **fxsaga.Runner, saga **fxsaga.Saga[Order]) *fx.App {
	return fx.New(
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module,
		fx.Supply(db, outboxConfig(opts.clock), o, Courier{Refuses: opts.refuseShipping}, Deadline(opts.deadline)),
		fx.Supply(fxsaga.Config{Runner: fxsaga.RunnerConfig{Now: opts.clock.Now}}),
		fx.Provide(func(db *sql.DB) (fxsaga.Store, error) {
			return fxsaga.NewSQL(db, fxoutbox.SQLite, fxsaga.Tables{}, 0)
		}),
		fx.Provide(NewReserveStock, NewRequestPayment, NewBookCourier),
		fxsaga.Register[Order](NewOrderSaga),
		fxbus.Route[PaymentRequested]("payments.requests"),
		fxbus.Route[RefundRequested]("payments.refunds"),
		fxbus.Subscribe[PaymentConfirmed]("payments.confirmed"),
		fxsaga.Resume[PaymentConfirmed](),
		fxcqrs.AsEventHandler(func() eventFunc[OrderSettled] {
			return func(_ context.Context, e OrderSettled) error {
				settled <- e.ID
				return nil
			}
		}),
		fx.Populate(runner, saga),
	)
}

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// run places order 7 with the saga, waits until it settles, and reports
// what each service's database holds.
func run(ctx context.Context, w io.Writer, dir string, opts options) error {
	o := out{mu: &sync.Mutex{}, w: w}
	ordersDB, err := openDB(dir, "orders.db", []string{
		"CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL)",
		"INSERT INTO stock VALUES ('lamp', 3)",
		"CREATE TABLE shipments (key TEXT PRIMARY KEY, parcel TEXT NOT NULL)",
	}, true)
	if err != nil {
		return err
	}
	defer ordersDB.Close()
	paymentsDB, err := openDB(dir, "payments.db", []string{
		"CREATE TABLE payments (payment TEXT PRIMARY KEY, cents INTEGER NOT NULL, refunded INTEGER NOT NULL DEFAULT 0)",
	}, false)
	if err != nil {
		return err
	}
	defer paymentsDB.Close()

	var (
		runner   *fxsaga.Runner
		saga     *fxsaga.Saga[Order]
		settled  = make(chan int, 1)
		refunded = make(chan string, 1)
	)
	payments := paymentsApp(paymentsDB, o, opts, refunded)
	orders := ordersApp(ordersDB, o, opts, settled, &runner, &saga)
	for _, app := range []*fx.App{payments, orders} {
		if err := app.Start(ctx); err != nil {
			return err
		}
		defer app.Stop(context.Background()) //nolint:errcheck // the run's error matters more
	}

	o.printf("saga order 7: reserve stock, request payment and wait for it (%v), book courier", opts.deadline)
	_, err = fxsaga.Run(ctx, runner, saga, Order{ID: 7, SKU: "lamp", Cents: 1999})
	var pending *fxsaga.Pending
	if !errors.As(err, &pending) {
		return fmt.Errorf("the saga did not wait: %w", err)
	}
	if opts.waiting != nil {
		opts.waiting()
	}
	select {
	case <-settled:
	case <-ctx.Done():
		return ctx.Err()
	}
	st, err := runner.Store().Load(ctx, pending.SagaID)
	if err != nil {
		return err
	}
	var order Order
	if err := json.Unmarshal(st.Context, &order); err != nil {
		return err
	}
	if st.Status == fxsaga.Compensated && order.Payment != "" {
		select { // the refund, which the payment service makes on its own
		case <-refunded:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	o.printf("fxsaga.Run had returned at once: waiting for %s %s; the saga is now %s", pending.Event, pending.Key, st.Status)
	if st.Error != "" {
		o.printf("  because %s", st.Error)
	}
	return report(ctx, o, ordersDB, paymentsDB)
}

// report prints what is left in the databases, and the saga's log.
func report(ctx context.Context, o out, orders, payments *sql.DB) error {
	var stock, parcels, charged, refunded int
	if err := orders.QueryRowContext(ctx, "SELECT qty FROM stock WHERE sku = 'lamp'").Scan(&stock); err != nil {
		return err
	}
	if err := orders.QueryRowContext(ctx, "SELECT COUNT(*) FROM shipments").Scan(&parcels); err != nil {
		return err
	}
	if err := payments.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(SUM(refunded), 0) FROM payments").Scan(&charged, &refunded); err != nil {
		return err
	}
	o.printf("orders:   %d lamps in stock, %d shipment", stock, parcels)
	o.printf("payments: %d payment (%d refunded)", charged, refunded)
	rows, err := orders.QueryContext(ctx, "SELECT step, action, error FROM fxcqrs_saga_log ORDER BY id")
	if err != nil {
		return err
	}
	defer rows.Close()
	o.printf("saga log:")
	for rows.Next() {
		var (
			step           int
			action, reason string
		)
		if err := rows.Scan(&step, &action, &reason); err != nil {
			return err
		}
		if reason == "" {
			reason = "ok"
		}
		o.printf("  step %d %-10s %s", step, action, reason)
	}
	return rows.Err()
}

func main() {
	refuse := flag.Bool("fail-shipping", false, "the courier refuses: the saga compensates")
	noPayment := flag.Bool("no-payment", false, "the customer never pays: at the deadline the saga compensates")
	deadline := flag.Duration("deadline", 2*time.Second, "how long the saga waits for the payment")
	mermaid := flag.Bool("mermaid", false, "print the saga as a Mermaid flowchart and exit")
	flag.Parse()
	if *mermaid {
		fmt.Print(NewOrderSaga(nil, nil, nil, Deadline(30*time.Minute)).Mermaid())
		return
	}
	fmt.Println("embedded defaults: SQLite files in a temporary directory, fxbus's in-process broker (no server needed)")
	dir, err := os.MkdirTemp("", "fxcqrs-saga-example")
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = run(ctx, os.Stdout, dir, options{refuseShipping: *refuse, noPayment: *noPayment, deadline: *deadline, clock: wallClock{}})
		cancel()
		_ = os.RemoveAll(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "saga:", err)
		os.Exit(1)
	}
}
