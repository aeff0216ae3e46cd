package fxoutbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"go.uber.org/fx"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

// RemindUnpaid is the examples' scheduled command (PlaceOrder,
// OrderPlaced, commandFunc and eventFunc are outbox_test.go's).
type RemindUnpaid struct{ ID int }

// service starts an application on a SQLite file of its own, with the
// orders table, and returns its mediator, its database and a stop.
func exampleService(opts ...fx.Option) (*fxcqrs.Mediator, *sql.DB, func()) {
	dir, err := os.MkdirTemp("", "fxoutbox-example")
	if err != nil {
		panic(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		panic(err)
	}
	db.SetMaxOpenConns(1) // SQLite has one writer
	ctx := context.Background()
	if err := fxoutbox.Migrate(ctx, db, fxoutbox.SQLite, fxoutbox.Tables{}); err != nil {
		panic(err)
	}
	if _, err := db.Exec("CREATE TABLE orders (id INTEGER PRIMARY KEY)"); err != nil {
		panic(err)
	}
	var m *fxcqrs.Mediator
	app := fx.New(append([]fx.Option{
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(db, fxoutbox.Config{Dialect: fxoutbox.SQLite, Relay: fxoutbox.RelayConfig{PollInterval: 20 * time.Millisecond}}),
		fx.Populate(&m),
	}, opts...)...)
	if err := app.Start(ctx); err != nil {
		panic(err)
	}
	return m, db, func() {
		_ = app.Stop(context.Background())
		_ = db.Close()
		_ = os.RemoveAll(dir)
	}
}

// A command's unit of work: its row and its durable event commit in one
// transaction (fxoutbox.Tx is that transaction), and the durable event's
// handler runs from the outbox's row after the commit, once, on whichever
// replica's relay takes it.
func ExampleDurable() {
	handled := make(chan int, 1)
	m, db, stop := exampleService(
		fxoutbox.Durable[OrderPlaced](),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", c.ID); err != nil {
					return err
				}
				fxcqrs.Emit(ctx, OrderPlaced(c)) // written to the outbox in the same transaction
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(_ context.Context, e OrderPlaced) error {
				handled <- e.ID
				return nil
			}
		}),
	)
	defer stop()

	if err := fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 7}); err != nil {
		panic(err)
	}
	var orders int
	_ = db.QueryRow("SELECT COUNT(*) FROM orders").Scan(&orders)
	fmt.Println("committed:", orders, "order")
	select {
	case id := <-handled:
		fmt.Println("durable handler ran for order", id)
	case <-time.After(time.Minute):
		fmt.Println("the durable handler did not run")
	}
	// Output:
	// committed: 1 order
	// durable handler ran for order 7
}

// A message scheduled in a command's unit of work: it exists if the
// transaction commits, and the command registered with Schedulable runs
// once, at its time, by the outbox's clock. fxoutbox.Cancel, in another
// unit of work, withdraws it while it waits.
func ExampleScheduleAfter() {
	reminded := make(chan int, 1)
	m, _, stop := exampleService(
		fxoutbox.Schedulable[RemindUnpaid](),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				_, err := fxoutbox.ScheduleAfter(ctx, 50*time.Millisecond, RemindUnpaid(c))
				return err
			}
		}),
		fxcqrs.AsCommandHandler(func() commandFunc[RemindUnpaid] {
			return func(_ context.Context, r RemindUnpaid) error {
				reminded <- r.ID
				return nil
			}
		}),
	)
	defer stop()

	start := time.Now()
	if err := fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 8}); err != nil {
		panic(err)
	}
	select {
	case id := <-reminded:
		fmt.Println("reminder for order", id, "ran; not before its time:", time.Since(start) >= 50*time.Millisecond)
	case <-time.After(time.Minute):
		fmt.Println("the reminder did not run")
	}
	// Output:
	// reminder for order 8 ran; not before its time: true
}
