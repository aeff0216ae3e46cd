// Command outbox runs an orders service and a billing service in one
// program, joined by a transactional outbox and an inbox:
//
//	orders:  PlaceOrder writes the order and OrderPlaced in one transaction;
//	         the relay delivers OrderPlaced after the commit
//	billing: OrderPlaced charges the order once per message id (the inbox),
//	         even when the broker delivers it twice
//
// By default it needs no server: SQLite files in a temporary directory and
// an in-process Watermill GoChannel (neither is shared with other
// processes, nor durable beyond the run):
//
//	go run ./examples/outbox
//	go run ./examples/outbox -postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' -nats nats://127.0.0.1:4222
//	go run ./examples/outbox -otel    # and print the order's trace, across both services
//	go run ./examples/outbox -console :8081   # then serve the repair console until ^C
//
// With -otel both services run the otel module (fxcqrsotel, otelbus) into
// one OpenTelemetry SDK, recording in memory: the trace context of
// OrderPlaced travels in its outbox row and on the broker, so that the
// billing service's handling continues the trace of the orders service's
// command.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxconsole"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"go.uber.org/fx"
	_ "modernc.org/sqlite"
)

// PlaceOrder is the orders service's command.
type PlaceOrder struct{ ID, Cents int }

// OrderPlaced leaves the orders service through its outbox.
type OrderPlaced struct {
	ID    int `json:"id"`
	Cents int `json:"cents"`
}

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// store is one service's database.
type store struct {
	db      *sql.DB
	dialect fxoutbox.Dialect
}

// setup opens the two services' databases and the broker.
type setup struct {
	orders, billing store
	broker          func(service string) (message.Publisher, message.Subscriber)
	topic           string
	close           func()
}

func sqliteSetup() (*setup, error) {
	dir, err := os.MkdirTemp("", "fxcqrs-outbox-example")
	if err != nil {
		return nil, err
	}
	open := func(name string) (store, error) {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, name)+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate")
		if err == nil {
			db.SetMaxOpenConns(1) // SQLite has one writer (fxoutbox's doc, "SQLite")
		}
		return store{db: db, dialect: fxoutbox.SQLite}, err
	}
	orders, err := open("orders.db")
	if err != nil {
		return nil, err
	}
	billing, err := open("billing.db")
	if err != nil {
		return nil, err
	}
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	return &setup{
		orders: orders, billing: billing,
		broker: func(string) (message.Publisher, message.Subscriber) { return gc, gc },
		topic:  "orders",
		close: func() {
			_ = gc.Close()
			_ = orders.db.Close()
			_ = billing.db.Close()
			_ = os.RemoveAll(dir)
		},
	}, nil
}

// serverSetup uses a PostgreSQL schema of its own per service and NATS
// JetStream.
func serverSetup(pgDSN, natsURL string) (*setup, error) {
	suffix := fmt.Sprintf("%d", rand.Uint32())
	admin, err := sql.Open("pgx", pgDSN)
	if err != nil {
		return nil, err
	}
	open := func(schema string) (store, error) {
		if _, err := admin.Exec("CREATE SCHEMA IF NOT EXISTS " + schema); err != nil {
			return store{}, err
		}
		u, err := url.Parse(pgDSN)
		if err != nil {
			return store{}, err
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		db, err := sql.Open("pgx", u.String())
		return store{db: db, dialect: fxoutbox.PostgreSQL}, err
	}
	orders, err := open("example_orders_" + suffix)
	if err != nil {
		return nil, err
	}
	billing, err := open("example_billing_" + suffix)
	if err != nil {
		return nil, err
	}
	var closers []func()
	return &setup{
		orders: orders, billing: billing,
		topic: "orders_" + suffix,
		broker: func(service string) (message.Publisher, message.Subscriber) {
			// The bus's own JetStream publisher and subscriber (fxbus/natsjs).
			ps, err := natsjs.New(natsjs.Config{URL: natsURL, Group: service})
			if err != nil {
				fmt.Fprintln(os.Stderr, "outbox example:", err)
				os.Exit(1)
			}
			closers = append(closers, func() { _ = ps.Close() })
			return ps, ps
		},
		close: func() {
			for _, c := range closers {
				c()
			}
			removeStreams(natsURL, "orders_"+suffix)
			_, _ = admin.Exec("DROP SCHEMA example_orders_" + suffix + " CASCADE")
			_, _ = admin.Exec("DROP SCHEMA example_billing_" + suffix + " CASCADE")
			_ = orders.db.Close()
			_ = billing.db.Close()
			_ = admin.Close()
		},
	}, nil
}

// removeStreams deletes the JetStream streams the example made, so that
// a shared server keeps nothing of it. A stream is named after its topic
// today; natsjs may map topics to other names (issue 40).
func removeStreams(url string, topics ...string) {
	nc, err := nats.Connect(url)
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return
	}
	for _, t := range topics {
		_ = js.DeleteStream(t)
	}
}

// line prints the timeline.
type line struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *line) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}

func service(ctx context.Context, s store, pub message.Publisher, sub message.Subscriber, inbox bool, tr *tracing, opts ...fx.Option) (*fx.App, *fxcqrs.Mediator, error) {
	if err := fxoutbox.Migrate(ctx, s.db, s.dialect, fxoutbox.Tables{}); err != nil {
		return nil, nil, err
	}
	var m *fxcqrs.Mediator
	// snippet:service
	app := fx.New(append([]fx.Option{
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(s.db, fxoutbox.Config{Dialect: s.dialect, Inbox: inbox, Relay: fxoutbox.RelayConfig{PollInterval: 200 * time.Millisecond}}),
		fx.Supply(fx.Annotate(pub, fx.As(new(message.Publisher)))),
		fx.Supply(fx.Annotate(sub, fx.As(new(message.Subscriber)))),
		fx.Populate(&m),
		tr.options(),
	}, opts...)...)
	// end snippet
	if err := app.Start(ctx); err != nil {
		return nil, nil, err
	}
	return app, m, nil
}

func pending(s store) int {
	var n int
	_ = s.db.QueryRow("SELECT COUNT(*) FROM fxcqrs_outbox").Scan(&n)
	return n
}

// ordersBus is what the orders service sends (its contract:
// testdata/asyncapi-orders.json).
func ordersBus(topic string) fx.Option { return fxbus.Route[OrderPlaced](topic) }

// billingBus is what the billing service receives (its contract:
// testdata/asyncapi-billing.json).
func billingBus(topic string) fx.Option { return fxbus.Subscribe[OrderPlaced](topic) }

func run(ctx context.Context, w io.Writer, st *setup, tr *tracing) error {
	l := &line{w: w}
	if err := createTables(ctx, st); err != nil {
		return err
	}
	charged := make(chan string, 4) // message ids, once per charge
	billingPub, billingSub := st.broker("billing")
	var billingOutbox *fxoutbox.Outbox
	billingApp, _, err := service(ctx, st.billing, billingPub, billingSub, true, tr,
		billingBus(st.topic),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] { return charge(st, l, charged) }),
		fx.Populate(&billingOutbox),
	)
	if err != nil {
		return err
	}
	defer billingApp.Stop(context.Background()) //nolint:errcheck // the run's error matters more

	ordersPub, ordersSub := st.broker("orders")
	ordersApp, orders, err := service(ctx, st.orders, ordersPub, ordersSub, false, tr,
		ordersBus(st.topic),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] { return placeOrder(st, l) }),
	)
	if err != nil {
		return err
	}
	defer ordersApp.Stop(context.Background()) //nolint:errcheck // the run's error matters more

	id, err := placeAndRelay(ctx, st, l, orders, charged)
	if err != nil {
		return err
	}
	if err := redeliver(ctx, st, l, billingPub, billingOutbox, id); err != nil {
		return err
	}
	if tr != nil {
		return tr.print(ctx, w)
	}
	return nil
}

// createTables makes each service's own table.
func createTables(ctx context.Context, st *setup) error {
	for _, s := range []store{st.orders, st.billing} {
		if _, err := s.db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL)"); err != nil {
			return err
		}
		if _, err := s.db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS charges (order_id INTEGER NOT NULL, cents INTEGER NOT NULL)"); err != nil {
			return err
		}
	}
	return nil
}

// charge is the billing service's handler: it charges the order in the
// inbox's transaction, and tells charged the message's id.
func charge(st *setup, l *line, charged chan<- string) eventFunc[OrderPlaced] {
	return func(ctx context.Context, e OrderPlaced) error {
		tx := fxoutbox.Tx(ctx) // the inbox's transaction
		q := st.billing.dialect.Rebind("INSERT INTO charges (order_id, cents) VALUES (?, ?)")
		if _, err := tx.ExecContext(ctx, q, e.ID, e.Cents); err != nil {
			return err
		}
		l.printf("billing  OrderPlaced %d delivered; charged %d cents in the inbox's transaction", e.ID, e.Cents)
		charged <- fxbus.MessageID(ctx)
		return nil
	}
}

// placeOrder is the orders service's handler: the order and its event in
// one transaction.
func placeOrder(st *setup, l *line) commandFunc[PlaceOrder] {
	return func(ctx context.Context, c PlaceOrder) error {
		q := st.orders.dialect.Rebind("INSERT INTO orders (id, cents) VALUES (?, ?)")
		if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, q, c.ID, c.Cents); err != nil {
			return err
		}
		fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID, Cents: c.Cents})
		l.printf("orders   PlaceOrder %d: the order and OrderPlaced written in one transaction", c.ID)
		return nil
	}
}

// placeAndRelay places order 42, waits for billing to charge it and for
// the relay to delete its row, and returns the message's id.
func placeAndRelay(ctx context.Context, st *setup, l *line, orders *fxcqrs.Mediator, charged <-chan string) (string, error) {
	if err := fxcqrs.Exec(ctx, orders, PlaceOrder{ID: 42, Cents: 1999}); err != nil {
		return "", err
	}
	var id string
	select {
	case id = <-charged:
	case <-ctx.Done():
		return "", errors.New("OrderPlaced never arrived: " + ctx.Err().Error())
	}
	if err := poll(ctx, func() bool { return pending(st.orders) == 0 }); err != nil { // the relay deletes a row once the broker took it
		return "", err
	}
	l.printf("orders   the relay sent it: %d rows left in the outbox", pending(st.orders))
	return id, nil
}

// redeliver has the broker deliver message id again, as brokers do, and
// waits for billing's inbox to skip it.
func redeliver(ctx context.Context, st *setup, l *line, pub message.Publisher, billing *fxoutbox.Outbox, id string) error {
	dup := message.NewMessage(id, []byte(`{"id":42,"cents":1999}`))
	dup.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
	// A replay's mark: JetStream, which drops a second publish of one id
	// within its window, takes it as new; the consumer sees the same id.
	dup.Metadata.Set(fxbus.MetadataReplay, "example")
	if err := pub.Publish(st.topic, dup); err != nil {
		return err
	}
	if err := poll(ctx, func() bool { return billing.Stats().InboxDuplicates > 0 }); err != nil {
		return err
	}
	var charges int
	if err := st.billing.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM charges").Scan(&charges); err != nil {
		return err
	}
	l.printf("billing  the same message again: skipped by the inbox; %d charge in all", charges)
	return nil
}

// poll waits, a look every 10ms, until done or ctx ends.
func poll(ctx context.Context, done func() bool) error {
	for !done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func main() {
	pg := flag.String("postgres", "", "PostgreSQL DSN (default: SQLite files in a temporary directory)")
	natsURL := flag.String("nats", "nats://127.0.0.1:4222", "NATS JetStream URL, with -postgres")
	traced := flag.Bool("otel", false, "trace both services with OpenTelemetry and print the order's trace")
	consoleAddr := flag.String("console", "", "after the run, serve the repair console of the orders service's outbox at this address (:8081) until interrupted")
	flag.Parse()
	var tr *tracing
	if *traced {
		tr = newTracing()
	}
	var st *setup
	var err error
	if *pg == "" {
		fmt.Println("databases: SQLite, temporary; broker: in-process GoChannel (not durable; -postgres and -nats for real ones)")
		st, err = sqliteSetup()
	} else {
		fmt.Println("databases: PostgreSQL; broker: NATS JetStream at", *natsURL)
		st, err = serverSetup(*pg, *natsURL)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbox:", err)
		os.Exit(1)
	}
	defer st.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout, st, tr); err != nil {
		fmt.Fprintln(os.Stderr, "outbox:", err)
		cancel()
		st.close()
		os.Exit(1)
	}
	if *consoleAddr != "" {
		if err := serveConsole(*consoleAddr, st.orders); err != nil {
			fmt.Fprintln(os.Stderr, "outbox: console:", err)
		}
	}
}

// serveConsole serves the repair console of s's outbox at addr until the
// process is interrupted. It lets everyone in (InsecureAllowEveryone):
// an example on a developer's machine, never a served service.
func serveConsole(addr string, s store) error {
	admin, err := fxoutbox.NewAdmin(s.db, s.dialect, fxoutbox.Tables{}, nil)
	if err != nil {
		return err
	}
	console, err := fxconsole.New(admin, nil, fxconsole.Config{InsecureAllowEveryone: true, Actions: true})
	if err != nil {
		return err
	}
	// The charts draw the samples the console takes from now on.
	if err := console.Start(context.Background()); err != nil {
		return err
	}
	defer func() { _ = console.Stop(context.Background()) }()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("console of the orders service's outbox: http://%s/ (everyone may act: an example only); ^C to stop\n", ln.Addr())
	srv := &http.Server{Handler: console, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
