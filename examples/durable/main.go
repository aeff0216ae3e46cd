// Command durable shows what the outbox keeps after the commit: a
// projection kept by a durable in-process handler, and an order cancelled
// if it is not paid within a delay.
//
//	PlaceOrder   writes the order, emits OrderPlaced (durable) and
//	             schedules CancelUnpaid after -delay, in one transaction
//	PayOrder     marks the order paid and cancels its schedule
//	CancelUnpaid cancels the order if it is still unpaid, emits
//	             OrderCancelled (durable)
//	the projection counts placed and cancelled orders, from rows the relay
//	delivers after the commit, each once
//
// With -crash, the program first starts itself again as a child that
// places an order and is killed (SIGKILL) after the commit, inside the
// projection's handler, before the handler's transaction commits; the
// program then runs as usual on the same database and shows the
// projection caught up: the order's row waited in the outbox.
//
// It needs no server: a SQLite file in a temporary directory (not shared
// with other processes, removed at the end), and the bus's in-process
// broker, which it does not use:
//
//	go run ./examples/durable
//	go run ./examples/durable -crash
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"go.uber.org/fx"
	_ "modernc.org/sqlite"
)

// Commands.
type (
	PlaceOrder   struct{ ID int }
	PayOrder     struct{ ID int }
	CancelUnpaid struct{ ID int }
)

// Durable events.
type (
	OrderPlaced    struct{ ID int }
	OrderCancelled struct{ ID int }
)

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

const schema = `
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL, reminder TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS summary (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO summary (name, n) VALUES ('placed', 0), ('cancelled', 0);`

// env is what the handlers need: whom to tell.
type env struct {
	crashIn   bool          // the child: die in the projection's handler
	cancelled chan int      // an order was cancelled
	projected chan struct{} // the projection moved
}

func main() {
	crash := flag.Bool("crash", false, "first place an order in a child process killed between the commit and the projection's handler")
	delay := flag.Duration("delay", time.Second, "how long an order may stay unpaid")
	flag.Parse()
	if err := entry(os.Stdout, *crash, *delay, wallClock); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// clock is the example's time: now is the outbox's clock (fxoutbox.Config.Now,
// which decides when a schedule is due), and pass is called where the
// example waits for an unpaid order's time to run out. The program runs on
// the wall clock, where time passes by itself; its test moves a fake clock
// on, so that what it checks is the order of events, not the machine's
// speed.
type clock struct {
	now  func() time.Time
	pass func(time.Duration)
}

var wallClock = clock{now: time.Now, pass: func(time.Duration) {}}

func entry(out io.Writer, crash bool, delay time.Duration, clk clock) error {
	if path := os.Getenv("FXCQRS_DURABLE_CHILD"); path != "" {
		return child(path)
	}
	dir, err := os.MkdirTemp("", "fxcqrs-durable-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "shop.db")
	fmt.Fprintln(out, "(embedded defaults: a SQLite file of this run only)")
	if crash {
		if err := crashChild(out, path); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return run(ctx, out, path, delay, clk, crash)
}

// open opens and migrates the database at path.
func open(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // SQLite writes one at a time
	if err := fxoutbox.Migrate(context.Background(), db, fxoutbox.SQLite, fxoutbox.Tables{}); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if _, err := db.Exec(schema); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return db, nil
}

// app builds the service on db; m receives its mediator; extra are more
// options (a test takes the bus for the service's contract).
func app(db *sql.DB, e *env, now func() time.Time, m **fxcqrs.Mediator, extra ...fx.Option) *fx.App {
	return fx.New(
		fx.NopLogger,
		// snippet:durable
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(db, fxoutbox.Config{Dialect: fxoutbox.SQLite, Now: now, Relay: fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond, Lease: time.Second}}),
		fx.Supply(e),
		fxoutbox.Durable[OrderPlaced](),
		fxoutbox.Durable[OrderCancelled](),
		fxoutbox.Schedulable[CancelUnpaid](),
		// end snippet
		fxcqrs.AsCommandHandler(newPlaceOrder),
		fxcqrs.AsCommandHandler(newPayOrder),
		fxcqrs.AsCommandHandler(newCancelUnpaid),
		// One projection type, a method per event, each handler under a
		// name of its own: the name the inbox records its effects under.
		fx.Provide(func(d *env) projection { return projection{d} }),
		fxcqrs.AsEventHandler(func(p projection) fxcqrs.EventHandler[OrderPlaced] {
			return fxcqrs.EventFunc("projection.placed", p.placed)
		}),
		fxcqrs.AsEventHandler(func(p projection) fxcqrs.EventHandler[OrderCancelled] {
			return fxcqrs.EventFunc("projection.cancelled", p.cancelled)
		}),
		fx.Populate(m),
		fx.Options(extra...),
	)
}

// snippet:schedule
func newPlaceOrder(d *env) commandFunc[PlaceOrder] {
	return func(ctx context.Context, c PlaceOrder) error {
		reminder, err := fxoutbox.ScheduleAfter(ctx, delayOf(ctx), CancelUnpaid(c))
		if err != nil {
			return err
		}
		if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO orders (id, status, reminder) VALUES (?, 'unpaid', ?)", c.ID, reminder); err != nil {
			return err
		}
		fxcqrs.Emit(ctx, OrderPlaced(c))
		return nil
	}
}

// end snippet

func newPayOrder(d *env) commandFunc[PayOrder] {
	return func(ctx context.Context, c PayOrder) error {
		tx := fxoutbox.Tx(ctx)
		var reminder string
		if err := tx.QueryRowContext(ctx, "SELECT reminder FROM orders WHERE id = ?", c.ID).Scan(&reminder); err != nil {
			return err
		}
		if _, err := fxoutbox.Cancel(ctx, reminder); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE orders SET status = 'paid' WHERE id = ?", c.ID)
		return err
	}
}

func newCancelUnpaid(d *env) commandFunc[CancelUnpaid] {
	return func(ctx context.Context, c CancelUnpaid) error {
		res, err := fxoutbox.Tx(ctx).ExecContext(ctx, "UPDATE orders SET status = 'cancelled' WHERE id = ? AND status = 'unpaid'", c.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			fxcqrs.Emit(ctx, OrderCancelled(c))
			d.cancelled <- c.ID
		}
		return nil
	}
}

// projection keeps the summary, a method per event it follows.
type projection struct{ d *env }

func (p projection) placed(ctx context.Context, _ OrderPlaced) error {
	if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "UPDATE summary SET n = n + 1 WHERE name = 'placed'"); err != nil {
		return err
	}
	if p.d.crashIn {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL) // after the commit, before this handler's own
	}
	p.d.projected <- struct{}{}
	return nil
}

func (p projection) cancelled(ctx context.Context, _ OrderCancelled) error {
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "UPDATE summary SET n = n + 1 WHERE name = 'cancelled'")
	p.d.projected <- struct{}{}
	return err
}

type delayKey struct{}

func delayOf(ctx context.Context) time.Duration {
	d, _ := ctx.Value(delayKey{}).(time.Duration)
	return d
}

// run places orders 1 and 2, pays 1, and waits for 2 to be cancelled by
// its schedule, printing the projection as the relay keeps it.
func run(ctx context.Context, out io.Writer, path string, delay time.Duration, clk clock, crashed bool) error {
	db, err := open(path)
	if err != nil {
		return err
	}
	defer db.Close()
	e := &env{cancelled: make(chan int, 4), projected: make(chan struct{}, 16)}
	var m *fxcqrs.Mediator
	a := app(db, e, clk.now, &m)
	if err := a.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = a.Stop(context.Background()) }()
	if crashed {
		// The killed child's OrderPlaced row waited in the outbox: the
		// relay delivers it now.
		if err := wait(ctx, e.projected); err != nil {
			return err
		}
		fmt.Fprintf(out, "after the restart: the projection caught up, %s\n", summary(db))
	}
	ctx = context.WithValue(ctx, delayKey{}, delay)
	for _, id := range []int{1, 2} {
		if err := fxcqrs.Exec(ctx, m, PlaceOrder{ID: id}); err != nil {
			return err
		}
		if err := wait(ctx, e.projected); err != nil {
			return err
		}
		fmt.Fprintf(out, "order %d placed; it must be paid within %v; projection: %s\n", id, delay, summary(db))
	}
	if err := fxcqrs.Exec(ctx, m, PayOrder{ID: 1}); err != nil {
		return err
	}
	fmt.Fprintln(out, "order 1 paid: its cancellation is cancelled")
	clk.pass(delay)
	select {
	case id := <-e.cancelled:
		if id != 2 {
			return fmt.Errorf("order %d was cancelled; only order 2 was to be", id)
		}
		fmt.Fprintf(out, "order %d: not paid in time, cancelled by its schedule\n", id)
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := wait(ctx, e.projected); err != nil {
		return err
	}
	fmt.Fprintf(out, "projection: %s\n", summary(db))
	return nil
}

func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the relay did not deliver: %w", ctx.Err())
	}
}

func summary(db *sql.DB) string {
	var placed, cancelled int
	_ = db.QueryRow("SELECT n FROM summary WHERE name = 'placed'").Scan(&placed)
	_ = db.QueryRow("SELECT n FROM summary WHERE name = 'cancelled'").Scan(&cancelled)
	return fmt.Sprintf("%d placed, %d cancelled", placed, cancelled)
}

// crashChild runs this program again as a child that places order 99 and
// is killed inside the projection's handler.
func crashChild(out io.Writer, path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), "FXCQRS_DURABLE_CHILD="+path)
	cmd.Stderr = os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		return fmt.Errorf("the child was to be killed, and ended: %w", err)
	}
	fmt.Fprintln(out, "child: order 99 committed, then killed (SIGKILL) in the projection's handler")
	return nil
}

func child(path string) error {
	db, err := open(path)
	if err != nil {
		return err
	}
	defer db.Close()
	e := &env{crashIn: true, cancelled: make(chan int, 4), projected: make(chan struct{}, 16)}
	var m *fxcqrs.Mediator
	a := app(db, e, time.Now, &m)
	if err := a.Start(context.Background()); err != nil {
		return err
	}
	ctx := context.WithValue(context.Background(), delayKey{}, 24*time.Hour) // not due in this run
	if err := fxcqrs.Exec(ctx, m, PlaceOrder{ID: 99}); err != nil {
		return err
	}
	select {} // killed by its own handler
}
