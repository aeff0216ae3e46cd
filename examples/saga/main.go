// Command saga places an order as a saga of three steps over one SQLite
// database: reserve stock, charge the card, book a courier. Each step runs
// in a transaction of its own (the outbox module's unit of work), in which
// the step's writes and the saga's state commit together. With
// -fail-shipping the courier refuses, and the completed steps are
// compensated in reverse: the charge refunded (a compensating event tells
// the customer), the stock released.
//
//	go run ./examples/saga
//	go run ./examples/saga -fail-shipping
//	go run ./examples/saga -mermaid    # the saga as a Mermaid flowchart
//
// It needs no server: a SQLite file in a temporary directory and an
// in-process Watermill GoChannel for the bus (nothing here is routed to it).
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
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

// CardRefunded is the compensating event the refund emits.
type CardRefunded struct{ Order, Cents int }

// out is where the steps say what they did.
type out struct{ io.Writer }

func (o out) printf(format string, args ...any) { fmt.Fprintf(o, format+"\n", args...) }

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
	s.out.printf("  act  reserve stock: one %s", o.SKU)
	return nil
}

// Compensate releases the unit.
func (s *ReserveStock) Compensate(ctx context.Context, o *Order) error {
	if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "UPDATE stock SET qty = qty + 1 WHERE sku = ?", o.SKU); err != nil {
		return err
	}
	s.out.printf("  undo reserve stock: one %s back", o.SKU)
	return nil
}

// ChargeCard charges the order. The payment provider is a table here; a
// real one would get fxsaga.IdempotencyKey to deduplicate a retry.
type ChargeCard struct{ out out }

// NewChargeCard is the step's constructor.
func NewChargeCard(o out) *ChargeCard { return &ChargeCard{o} }

// Act charges the card once per idempotency key.
func (s *ChargeCard) Act(ctx context.Context, o *Order) error {
	o.Payment = fmt.Sprintf("pay-%d", o.ID)
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx,
		"INSERT INTO payments (key, payment, cents) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
		fxsaga.IdempotencyKey(ctx), o.Payment, o.Cents)
	if err != nil {
		return err
	}
	s.out.printf("  act  charge card: %d cents (%s)", o.Cents, o.Payment)
	return nil
}

// Compensate refunds the charge and tells the customer.
func (s *ChargeCard) Compensate(ctx context.Context, o *Order) error {
	if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "UPDATE payments SET refunded = 1 WHERE payment = ?", o.Payment); err != nil {
		return err
	}
	s.out.printf("  undo charge card: %d cents refunded", o.Cents)
	fxcqrs.Emit(ctx, CardRefunded{Order: o.ID, Cents: o.Cents})
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

// Act books the courier.
func (s *BookCourier) Act(ctx context.Context, o *Order) error {
	if s.refuse {
		s.out.printf("  act  book courier: refused")
		return errors.New("no courier today")
	}
	o.Shipment = fmt.Sprintf("parcel-%d", o.ID)
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO shipments (key, parcel) VALUES (?, ?)", fxsaga.IdempotencyKey(ctx), o.Shipment)
	if err != nil {
		return err
	}
	s.out.printf("  act  book courier: %s", o.Shipment)
	return nil
}

// Compensate cancels the booking. The last step's is never needed by
// this saga (nothing follows it to fail), but recovery can call it
// should the saga have been compensating when it crashed.
func (s *BookCourier) Compensate(ctx context.Context, o *Order) error {
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "DELETE FROM shipments WHERE parcel = ?", o.Shipment)
	return err
}

// NewOrderSaga defines the saga from its steps, which fx makes.
func NewOrderSaga(r *ReserveStock, c *ChargeCard, b *BookCourier) *fxsaga.Saga[Order] {
	return fxsaga.Define[Order]("order", r, c, b)
}

type refundNotifier struct{ out out }

func (n refundNotifier) Handle(_ context.Context, e CardRefunded) error {
	n.out.printf("  event CardRefunded: customer of order %d told of the %d cents refund", e.Order, e.Cents)
	return nil
}

func openDB(dir string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "orders.db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	for _, q := range []string{
		"CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL)",
		"INSERT INTO stock VALUES ('lamp', 3)",
		"CREATE TABLE payments (key TEXT PRIMARY KEY, payment TEXT NOT NULL, cents INTEGER NOT NULL, refunded INTEGER NOT NULL DEFAULT 0)",
		"CREATE TABLE shipments (key TEXT PRIMARY KEY, parcel TEXT NOT NULL)",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, errors.Join(err, db.Close())
		}
	}
	if err := fxoutbox.Migrate(ctx, db, fxoutbox.SQLite, fxoutbox.Tables{}); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if err := fxsaga.Migrate(ctx, db, fxoutbox.SQLite, fxsaga.Tables{}); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return db, nil
}

// run places order 7 with the saga and reports what is left in the
// database.
func run(ctx context.Context, w io.Writer, db *sql.DB, refuse bool) error {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer gc.Close() //nolint:errcheck // nothing was published
	var (
		runner *fxsaga.Runner
		saga   *fxsaga.Saga[Order]
	)
	app := fx.New(
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module,
		fx.Supply(db, fxoutbox.Config{Dialect: fxoutbox.SQLite}, out{w}, Courier{Refuses: refuse}),
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)))),
		fx.Provide(func(db *sql.DB) (fxsaga.Store, error) {
			return fxsaga.NewSQL(db, fxoutbox.SQLite, fxsaga.Tables{}, 0)
		}),
		fx.Provide(NewReserveStock, NewChargeCard, NewBookCourier),
		fxsaga.Register[Order](NewOrderSaga),
		fxcqrs.AsEventHandler(func(o out) refundNotifier { return refundNotifier{o} }),
		fx.Populate(&runner, &saga),
	)
	if err := app.Start(ctx); err != nil {
		return err
	}
	defer app.Stop(context.Background()) //nolint:errcheck // the run's error matters more

	fmt.Fprintln(w, "saga order 7: reserve stock, charge card, book courier")
	order, err := fxsaga.Run(ctx, runner, saga, Order{ID: 7, SKU: "lamp", Cents: 1999})
	var sagaErr *fxsaga.Error
	switch {
	case errors.As(err, &sagaErr):
		fmt.Fprintf(w, "%s: step %s failed (%v)\n", sagaErr.Status, sagaErr.Step, sagaErr.Err)
	case err != nil:
		return err
	default:
		fmt.Fprintf(w, "COMPLETED: payment %s, shipment %s\n", order.Payment, order.Shipment)
	}

	var stock, charged, refunded, parcels int
	if err := db.QueryRowContext(ctx, "SELECT qty FROM stock WHERE sku = 'lamp'").Scan(&stock); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(SUM(refunded), 0) FROM payments").Scan(&charged, &refunded); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM shipments").Scan(&parcels); err != nil {
		return err
	}
	fmt.Fprintf(w, "database: %d lamps in stock, %d payment (%d refunded), %d shipment\n", stock, charged, refunded, parcels)
	rows, err := db.QueryContext(ctx, "SELECT step, action, error FROM fxcqrs_saga_log ORDER BY id")
	if err != nil {
		return err
	}
	defer rows.Close()
	fmt.Fprintln(w, "saga log:")
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
		fmt.Fprintf(w, "  step %d %-10s %s\n", step, action, reason)
	}
	return rows.Err()
}

func main() {
	refuse := flag.Bool("fail-shipping", false, "the courier refuses: the saga compensates")
	mermaid := flag.Bool("mermaid", false, "print the saga as a Mermaid flowchart and exit")
	flag.Parse()
	if *mermaid {
		fmt.Print(NewOrderSaga(nil, nil, nil).Mermaid())
		return
	}
	fmt.Println("database: SQLite, in a temporary directory (no server needed)")
	dir, err := os.MkdirTemp("", "fxcqrs-saga-example")
	if err == nil {
		var db *sql.DB
		if db, err = openDB(dir); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = run(ctx, os.Stdout, db, *refuse)
			cancel()
			err = errors.Join(err, db.Close())
		}
		_ = os.RemoveAll(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "saga:", err)
		os.Exit(1)
	}
}
