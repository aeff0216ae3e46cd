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
//
// As two processes, on PostgreSQL (one database, each service's outbox
// tables of its own) and NATS JetStream:
//
//	go run ./examples/saga -postgres $PG -nats nats://127.0.0.1:4222 -role payments   # serves until ^C; -no-payment here
//	go run ./examples/saga -postgres $PG -nats nats://127.0.0.1:4222 -role orders -order 8
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
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	_ "github.com/jackc/pgx/v5/stdlib"
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

// SQL writes the services' queries in their database's dialect.
type SQL struct{ Dialect fxoutbox.Dialect }

// Q is query with the dialect's placeholders.
func (s SQL) Q(query string) string { return s.Dialect.Rebind(query) }

// ReserveStock takes one unit of the order's SKU.
type ReserveStock struct {
	out out
	sql SQL
}

// NewReserveStock is the step's constructor: any dependency will do.
func NewReserveStock(o out, q SQL) *ReserveStock { return &ReserveStock{o, q} }

// Act reserves a unit, in the step's transaction.
func (s *ReserveStock) Act(ctx context.Context, o *Order) error {
	res, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.sql.Q("UPDATE stock SET qty = qty - 1 WHERE sku = ? AND qty > 0"), o.SKU)
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
	if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.sql.Q("UPDATE stock SET qty = qty + 1 WHERE sku = ?"), o.SKU); err != nil {
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
	sql    SQL
	refuse bool
}

// Courier says whether the courier refuses (the -fail-shipping flag).
type Courier struct{ Refuses bool }

// NewBookCourier is the step's constructor.
func NewBookCourier(o out, q SQL, c Courier) *BookCourier { return &BookCourier{o, q, c.Refuses} }

// Act books the courier, once per idempotency key.
func (s *BookCourier) Act(ctx context.Context, o *Order) error {
	if s.refuse {
		s.out.printf("orders:   act  book courier: refused")
		return errors.New("no courier today")
	}
	o.Shipment = fmt.Sprintf("parcel-%d", o.ID)
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.sql.Q("INSERT INTO shipments (key, parcel) VALUES (?, ?)"), fxsaga.IdempotencyKey(ctx), o.Shipment)
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
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.sql.Q("DELETE FROM shipments WHERE parcel = ?"), o.Shipment)
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
	order          int
	clock          Clock
	// waiting, if set, is called once Run has returned the saga waiting
	// (a test moves its clock there).
	waiting func()
}

// service is where one service keeps its data and meets the other: its
// database (and the dialect, and its outbox's tables there) and, when not
// the in-process broker, its broker.
type service struct {
	db     *sql.DB
	sql    SQL
	tables fxoutbox.Tables
	broker fx.Option
}

// topics are where the services meet (natsjs names a stream after its
// topic, so no dots); a test gives them a prefix of its own.
var topics = struct{ requests, refunds, confirmed string }{"payment_requests", "payment_refunds", "payments_confirmed"}

// The services' own tables.
var (
	ordersSchema = []string{
		"CREATE TABLE IF NOT EXISTS stock (sku VARCHAR(64) PRIMARY KEY, qty INTEGER NOT NULL)",
		"INSERT INTO stock (sku, qty) VALUES ('lamp', 3) ON CONFLICT (sku) DO UPDATE SET qty = 3",
		"CREATE TABLE IF NOT EXISTS shipments (key VARCHAR(128) PRIMARY KEY, parcel VARCHAR(64) NOT NULL)",
	}
	paymentsSchema = []string{
		"CREATE TABLE IF NOT EXISTS payments (payment VARCHAR(64) PRIMARY KEY, cents INTEGER NOT NULL, refunded INTEGER NOT NULL DEFAULT 0)",
	}
)

// paymentsOutbox are the payment service's outbox tables: beside the
// orders service's in one database (-postgres), they need names of their
// own.
var paymentsOutbox = fxoutbox.Tables{
	Outbox: "payments_outbox", DeadLetters: "payments_dead", Leases: "payments_leases",
	Inbox: "payments_inbox", Scheduled: "payments_scheduled", Migrations: "payments_migrations",
}

// openService opens the service's database (the SQLite file name in dir,
// or PostgreSQL at pg) and creates its tables: its own (schema) and those
// of the modules it runs.
func openService(dir, pg, name string, schema []string, tables fxoutbox.Tables, saga bool) (service, error) {
	driver, dsn, d := "sqlite", "file:"+filepath.Join(dir, name+".db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)", fxoutbox.SQLite
	if pg != "" {
		driver, dsn, d = "pgx", pg, fxoutbox.PostgreSQL
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return service{}, err
	}
	ctx := context.Background()
	for _, q := range schema {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return service{}, errors.Join(err, db.Close())
		}
	}
	if err := fxoutbox.Migrate(ctx, db, d, tables); err != nil {
		return service{}, errors.Join(err, db.Close())
	}
	if saga {
		if err := fxsaga.Migrate(ctx, db, d, fxsaga.Tables{}); err != nil {
			return service{}, errors.Join(err, db.Close())
		}
	}
	return service{db: db, sql: SQL{d}, tables: tables}, nil
}

// natsBroker is the service's JetStream publisher and subscriber, its
// replicas one consumer group.
func natsBroker(url, group string) (fx.Option, func() error, error) {
	ps, err := natsjs.New(natsjs.Config{URL: url, Group: group})
	if err != nil {
		return nil, nil, err
	}
	return fx.Supply(
		fx.Annotate(ps, fx.As(new(message.Publisher))),
		fx.Annotate(ps, fx.As(new(message.Subscriber))),
	), ps.Close, nil
}

// outboxConfig is each service's: the inbox on (each message handled
// once), the run's clock, a short poll for the other replica's rows.
func (s service) outboxConfig(c Clock) fxoutbox.Config {
	return fxoutbox.Config{
		Dialect: s.sql.Dialect, Tables: s.tables, Inbox: true, Now: c.Now, After: c.After,
		Relay: fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond},
	}
}

func (s service) options() fx.Option {
	if s.broker == nil {
		return fx.Options() // fxbus's in-process broker
	}
	return s.broker
}

// paymentsApp is the payment service: it charges what is requested and
// confirms it, unless the customer never pays; refunded receives each
// payment it refunds.
func paymentsApp(svc service, o out, opts options, refunded chan<- string) *fx.App {
	return fx.New(
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		svc.options(),
		fx.Supply(svc.db, svc.outboxConfig(opts.clock)),
		fxbus.Subscribe[PaymentRequested](topics.requests),
		fxbus.Subscribe[RefundRequested](topics.refunds),
		fxbus.Route[PaymentConfirmed](topics.confirmed),
		fxcqrs.AsEventHandler(func() eventFunc[PaymentRequested] {
			return func(ctx context.Context, e PaymentRequested) error {
				if opts.noPayment {
					o.printf("payments: order %d: %d cents requested; the customer never pays", e.OrderID, e.Cents)
					return nil
				}
				payment := fmt.Sprintf("pay-%d", e.OrderID)
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, svc.sql.Q("INSERT INTO payments (payment, cents) VALUES (?, ?) ON CONFLICT (payment) DO NOTHING"), payment, e.Cents); err != nil {
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
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, svc.sql.Q("UPDATE payments SET refunded = 1 WHERE payment = ?"), e.Payment); err != nil {
					return err
				}
				return fxoutbox.AfterCommit(ctx, func(context.Context) {
					if refunded != nil {
						refunded <- e.Payment
					}
				})
			}
		}),
	)
}

// ordersApp is the orders service: it runs the saga, which the payment
// service's PaymentConfirmed resumes; settled receives each order whose
// saga ended.
func ordersApp(svc service, o out, opts options, settled chan<- int, runner **fxsaga.Runner, saga **fxsaga.Saga[Order]) *fx.App {
	return fx.New(
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module,
		svc.options(),
		fx.Supply(svc.db, svc.outboxConfig(opts.clock), o, svc.sql, Courier{Refuses: opts.refuseShipping}, Deadline(opts.deadline)),
		fx.Supply(fxsaga.Config{Runner: fxsaga.RunnerConfig{Now: opts.clock.Now}}),
		fx.Provide(func(db *sql.DB) (fxsaga.Store, error) {
			return fxsaga.NewSQL(db, svc.sql.Dialect, fxsaga.Tables{}, 0)
		}),
		fx.Provide(NewReserveStock, NewRequestPayment, NewBookCourier),
		fxsaga.Register[Order](NewOrderSaga),
		fxbus.Route[PaymentRequested](topics.requests),
		fxbus.Route[RefundRequested](topics.refunds),
		fxbus.Subscribe[PaymentConfirmed](topics.confirmed),
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

// runOrders places the order with the saga, waits until it settles (and,
// when it compensated a paid order, for the refund, if this process runs
// the payment service: refunded is not nil), and reports what the
// databases hold.
func runOrders(ctx context.Context, orders, payments service, o out, opts options, refunded <-chan string) error {
	var (
		runner  *fxsaga.Runner
		saga    *fxsaga.Saga[Order]
		settled = make(chan int, 1)
	)
	app := ordersApp(orders, o, opts, settled, &runner, &saga)
	if err := app.Start(ctx); err != nil {
		return err
	}
	defer app.Stop(context.Background()) //nolint:errcheck // the run's error matters more

	o.printf("saga order %d: reserve stock, request payment and wait for it (%v), book courier", opts.order, opts.deadline)
	_, err := fxsaga.Run(ctx, runner, saga, Order{ID: opts.order, SKU: "lamp", Cents: 1999})
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
	if refunded != nil && st.Status == fxsaga.Compensated && order.Payment != "" {
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
	return report(ctx, o, orders, payments, order, st.ID)
}

// report prints what the databases hold of the order, and the saga's log.
func report(ctx context.Context, o out, orders, payments service, order Order, sagaID string) error {
	var stock, parcels, charged, refunded int
	if err := orders.db.QueryRowContext(ctx, "SELECT qty FROM stock WHERE sku = 'lamp'").Scan(&stock); err != nil {
		return err
	}
	if err := orders.db.QueryRowContext(ctx, orders.sql.Q("SELECT COUNT(*) FROM shipments WHERE parcel = ?"), fmt.Sprintf("parcel-%d", order.ID)).Scan(&parcels); err != nil {
		return err
	}
	o.printf("orders:   %d lamps in stock, %d shipment", stock, parcels)
	if payments.db != nil {
		if err := payments.db.QueryRowContext(ctx, payments.sql.Q("SELECT COUNT(*), COALESCE(SUM(refunded), 0) FROM payments WHERE payment = ?"), fmt.Sprintf("pay-%d", order.ID)).Scan(&charged, &refunded); err != nil {
			return err
		}
		o.printf("payments: %d payment (%d refunded)", charged, refunded)
	}
	rows, err := orders.db.QueryContext(ctx, orders.sql.Q("SELECT step, action, error FROM fxcqrs_saga_log WHERE saga_id = ? ORDER BY id"), sagaID)
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

// backend says where the services run: pg and natsURL empty for the
// embedded defaults.
type backend struct{ dir, pg, natsURL string }

func (b backend) open(name string, schema []string, tables fxoutbox.Tables, saga bool) (service, func() error, error) {
	svc, err := openService(b.dir, b.pg, name, schema, tables, saga)
	if err != nil {
		return service{}, nil, err
	}
	closers := []func() error{svc.db.Close}
	if b.natsURL != "" {
		opt, closeBroker, err := natsBroker(b.natsURL, name)
		if err != nil {
			return service{}, nil, errors.Join(err, svc.db.Close())
		}
		svc.broker = opt
		closers = append([]func() error{closeBroker}, closers...)
	}
	return svc, func() error {
		var errs []error
		for _, c := range closers {
			errs = append(errs, c())
		}
		return errors.Join(errs...)
	}, nil
}

// run runs role ("both", "orders" or "payments") on b: the order's saga
// for both and orders; the payment service, until ctx ends, for payments.
func run(ctx context.Context, w io.Writer, b backend, role string, opts options) (err error) {
	o := out{mu: &sync.Mutex{}, w: w}
	var orders, payments service
	if role != "orders" {
		var closePayments func() error
		payments, closePayments, err = b.open("payments", paymentsSchema, paymentsOutbox, false)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, closePayments()) }()
		refunded := make(chan string, 1)
		if role == "payments" {
			refunded = nil
		}
		app := paymentsApp(payments, o, opts, refunded)
		if err := app.Start(ctx); err != nil {
			return err
		}
		defer app.Stop(context.Background()) //nolint:errcheck // the run's error matters more
		if role == "payments" {
			o.printf("payments: serving until interrupted")
			<-ctx.Done()
			return nil
		}
		var closeOrders func() error
		orders, closeOrders, err = b.open("orders", ordersSchema, fxoutbox.Tables{}, true)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, closeOrders()) }()
		return runOrders(ctx, orders, payments, o, opts, refunded)
	}
	var closeOrders func() error
	orders, closeOrders, err = b.open("orders", ordersSchema, fxoutbox.Tables{}, true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeOrders()) }()
	if b.pg != "" {
		payments = service{db: orders.db, sql: orders.sql} // one database: report the payment too
	}
	return runOrders(ctx, orders, payments, o, opts, nil)
}

func main() {
	refuse := flag.Bool("fail-shipping", false, "the courier refuses: the saga compensates")
	noPayment := flag.Bool("no-payment", false, "the customer never pays: at the deadline the saga compensates")
	deadline := flag.Duration("deadline", 2*time.Second, "how long the saga waits for the payment")
	mermaid := flag.Bool("mermaid", false, "print the saga as a Mermaid flowchart and exit")
	pg := flag.String("postgres", "", "PostgreSQL URL for both services (default: a SQLite file each)")
	natsURL := flag.String("nats", "", "NATS JetStream URL (default: fxbus's in-process broker)")
	role := flag.String("role", "both", "both (one process), or orders or payments (two processes: needs -postgres and -nats)")
	order := flag.Int("order", 7, "the order's id")
	flag.Parse()
	if *mermaid {
		fmt.Print(NewOrderSaga(nil, nil, nil, Deadline(30*time.Minute)).Mermaid())
		return
	}
	if err := start(*role, *pg, *natsURL, options{
		refuseShipping: *refuse, noPayment: *noPayment, deadline: *deadline, order: *order, clock: wallClock{},
	}); err != nil {
		fmt.Fprintln(os.Stderr, "saga:", err)
		os.Exit(1)
	}
}

func start(role, pg, natsURL string, opts options) error {
	switch {
	case role != "both" && role != "orders" && role != "payments":
		return fmt.Errorf("-role %q: both, orders or payments", role)
	case role != "both" && (pg == "" || natsURL == ""):
		return errors.New("two processes need -postgres and -nats: the embedded SQLite files and broker are one process's")
	}
	where := []string{"SQLite files in a temporary directory", "fxbus's in-process broker"}
	if pg != "" {
		where[0] = "PostgreSQL"
	}
	if natsURL != "" {
		where[1] = "NATS JetStream"
	}
	if pg == "" || natsURL == "" {
		fmt.Printf("embedded defaults: %s, %s (no server needed)\n", where[0], where[1])
	} else {
		fmt.Printf("%s: %s, %s\n", role, where[0], where[1])
	}
	dir, err := os.MkdirTemp("", "fxcqrs-saga-example")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if role != "payments" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	return run(ctx, os.Stdout, backend{dir: dir, pg: pg, natsURL: natsURL}, role, opts)
}
