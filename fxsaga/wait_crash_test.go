package fxsaga_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// The crash test of sagas that wait. Two services, each a process of its
// own (this test binary, re-executed) with its own outbox on the test's
// database, talk through NATS JetStream:
//
//	orders:   reserve (an external call) → request the payment and wait
//	          for Paid, 1.5 s → ship (an external call)
//	payments: PaymentRequested → charges once (its inbox) → Paid; every
//	          fourth order is never paid
//
// Each round kills one of the two with SIGKILL, or both, at a random
// moment, and restarts it; on SQLite both run in one process, killed
// together. Then both run until every saga has ended. Every saga ends as
// designed: an order never paid compensated at its deadline, a paid one
// completed or, when its payment came after the deadline (a killed
// service's downtime), compensated; exactly one of its event and its
// deadline won (one of the two in its log, never both); no step acted
// after its saga began compensating; each effect applied once.

const waitCrashRounds = 6

func TestWaitCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test kills processes; not with -short")
	}
	t.Parallel()
	addr := outboxtest.Env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	u, err := url.Parse(addr)
	require.NoError(t, err)
	outboxtest.Reachable(t, "FXCQRS_NATS_URL", u.Host)
	for _, dialect := range []fxoutbox.Dialect{fxoutbox.PostgreSQL, fxoutbox.MySQL, fxoutbox.SQLite} {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			waitCrash(t, openDatabase(t, dialect), addr)
		})
	}
}

// paymentsTables are the payment service's outbox tables, beside the
// orders service's (the defaults) in the one test database.
var paymentsTables = fxoutbox.Tables{
	Outbox: "pay_outbox", DeadLetters: "pay_dead", Leases: "pay_leases", Inbox: "pay_inbox",
	Scheduled: "pay_scheduled", Migrations: "pay_migrations",
}

func waitCrash(t *testing.T, d database, addr string) {
	require.NoError(t, fxoutbox.Migrate(context.Background(), d.DB, d.Dialect, paymentsTables))
	serial := map[fxoutbox.Dialect]string{
		fxoutbox.PostgreSQL: "BIGSERIAL PRIMARY KEY",
		fxoutbox.MySQL:      "BIGINT AUTO_INCREMENT PRIMARY KEY",
		fxoutbox.SQLite:     "INTEGER PRIMARY KEY AUTOINCREMENT",
	}[d.Dialect]
	ext := externalDatabase(t, d)
	for _, ddl := range []string{
		"CREATE TABLE calls (seq " + serial + ", order_id BIGINT NOT NULL, step VARCHAR(16) NOT NULL, action VARCHAR(16) NOT NULL, saga_key VARCHAR(128) NOT NULL)",
		"CREATE TABLE effects (saga_key VARCHAR(128) PRIMARY KEY, order_id BIGINT NOT NULL)",
	} {
		_, err := ext.DB.Exec(ddl)
		require.NoError(t, err)
	}
	_, err := d.DB.Exec("CREATE TABLE charges (order_id BIGINT PRIMARY KEY)")
	require.NoError(t, err)
	suffix := strconv.FormatUint(rand.Uint64(), 36)
	t.Cleanup(func() {
		conn, err := nc.Connect(addr)
		if err != nil {
			return
		}
		defer conn.Close()
		if js, err := conn.JetStream(); err == nil {
			_ = js.DeleteStream("wait_requests_" + suffix)
			_ = js.DeleteStream("wait_paid_" + suffix)
		}
	})
	roles := []string{"orders", "payments"}
	if d.Dialect == fxoutbox.SQLite {
		roles = []string{"both"}
	}
	type proc struct {
		cmd    *exec.Cmd
		rest   *strings.Builder
		stderr *lockedBuilder
		done   chan struct{}
	}
	start := func(role, mode string, round int) proc {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWaitCrashChild$")
		cmd.Env = append(os.Environ(),
			"FXCQRS_WAIT_CRASH="+mode, "FXCQRS_WAIT_CRASH_ROLE="+role,
			"FXCQRS_WAIT_CRASH_DIALECT="+d.Dialect.String(), "FXCQRS_WAIT_CRASH_DSN="+d.DSN,
			"FXCQRS_WAIT_CRASH_EXTERNAL_DSN="+ext.DSN,
			"FXCQRS_WAIT_CRASH_DRIVER="+d.Driver, "FXCQRS_WAIT_CRASH_NATS="+addr,
			"FXCQRS_WAIT_CRASH_SUFFIX="+suffix, "FXCQRS_WAIT_CRASH_FROM="+strconv.Itoa(round*1_000_000),
		)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		stderr := &lockedBuilder{}
		cmd.Stderr = stderr
		require.NoError(t, cmd.Start())
		ready := make([]byte, len(childReady))
		_, err = io.ReadFull(stdout, ready)
		require.NoError(t, err, "%s, round %d: the child never got ready: %s", role, round, stderr.String())
		p := proc{cmd: cmd, rest: &strings.Builder{}, stderr: stderr, done: make(chan struct{})}
		go func() {
			_, _ = io.Copy(p.rest, stdout)
			close(p.done)
		}()
		return p
	}
	kill := func(role string, p proc) {
		require.NoError(t, p.cmd.Process.Kill()) // SIGKILL
		<-p.done
		_ = p.cmd.Wait()
		require.NotContains(t, p.rest.String(), "--- FAIL", "%s failed before it was killed: %s", role, p.rest.String())
		require.NotContains(t, p.stderr.String(), "DATA RACE", "%s: %s", role, p.stderr.String())
	}
	running := map[string]proc{}
	for _, role := range roles {
		running[role] = start(role, "run", 0)
	}
	for round := 1; round <= waitCrashRounds; round++ {
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond) // a random moment
		victims := roles
		if len(roles) == 2 {
			victims = [][]string{{"orders"}, {"payments"}, roles}[rand.IntN(3)]
		}
		for _, role := range victims {
			kill(role, running[role])
			running[role] = start(role, "run", round)
		}
	}
	for _, role := range roles {
		kill(role, running[role])
	}
	// No new sagas: both serve until every saga has ended.
	for _, role := range roles {
		running[role] = start(role, "drain", 0)
	}
	for _, role := range roles {
		if role == "payments" {
			continue
		}
		p := running[role]
		select {
		case <-p.done:
		case <-time.After(90 * time.Second):
			t.Fatalf("the drain did not end: %s", p.rest.String())
		}
		require.NoError(t, p.cmd.Wait(), "drain: %s\n%s", p.rest.String(), p.stderr.String())
		require.Contains(t, p.rest.String(), "PASS", p.rest.String())
	}
	if p, ok := running["payments"]; ok {
		kill("payments", p)
	}

	rows, err := d.DB.Query("SELECT id, status, context FROM fxcqrs_sagas")
	require.NoError(t, err)
	type saga struct {
		order  int
		status fxsaga.Status
	}
	sagas := map[string]saga{}
	for rows.Next() {
		var id, status, context string
		require.NoError(t, rows.Scan(&id, &status, &context))
		sagas[id] = saga{orderID(t, context), fxsaga.Status(status)}
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	wins := map[string]map[string]int{}
	rows, err = d.DB.Query("SELECT saga_id, action FROM fxcqrs_saga_log WHERE error = '' AND action IN ('resume', 'deadline')")
	require.NoError(t, err)
	for rows.Next() {
		var id, action string
		require.NoError(t, rows.Scan(&id, &action))
		if wins[id] == nil {
			wins[id] = map[string]int{}
		}
		wins[id][action]++
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	outcomes := map[string]int{}
	for id, s := range sagas {
		w := wins[id]
		switch s.status {
		case fxsaga.Completed:
			assert.Equal(t, map[string]int{"resume": 1}, w, "order %d completed: its payment won, once", s.order)
			assert.NotZero(t, s.order%4, "order %d was never paid, yet completed", s.order)
			outcomes["completed"]++
		case fxsaga.Compensated:
			assert.Equal(t, map[string]int{"deadline": 1}, w, "order %d compensated: its deadline won, once", s.order)
			if s.order%4 == 0 {
				outcomes["never paid"]++
			} else {
				outcomes["paid too late"]++
			}
		default:
			t.Errorf("order %d ended %s", s.order, s.status)
		}
	}
	require.NotZero(t, outcomes["completed"])
	require.NotZero(t, outcomes["never paid"])
	assert.Zero(t, count(t, ext.DB, `SELECT COUNT(*) FROM calls a JOIN calls c
		ON a.order_id = c.order_id AND a.action = 'act' AND c.action = 'compensate' AND a.seq > c.seq`),
		"a step acted after its saga began compensating")
	assert.Zero(t, count(t, ext.DB, `SELECT COUNT(*) FROM (SELECT order_id, step, action FROM calls
		GROUP BY order_id, step, action HAVING COUNT(DISTINCT saga_key) > 1) unstable`), "one idempotency key per call")
	// A completed saga: reserve, ship; a compensated one: reserve and its
	// compensation.
	assert.Equal(t, 2*len(sagas), count(t, ext.DB, "SELECT COUNT(*) FROM effects"))
	calls := count(t, ext.DB, "SELECT COUNT(*) FROM calls")
	t.Logf("%d rounds of kills: %d sagas, %v; %d external calls, %d re-run after a crash",
		waitCrashRounds, len(sagas), outcomes, calls, calls-2*len(sagas))
}

// TestWaitCrashChild is a process TestWaitCrash kills: the orders
// service, the payment service, or both ("both", on SQLite). In "run"
// mode the orders service starts new sagas until killed; in "drain" it
// starts none and returns once every saga has ended.
func TestWaitCrashChild(t *testing.T) {
	mode := os.Getenv("FXCQRS_WAIT_CRASH")
	if mode == "" {
		t.Skip("started by TestWaitCrash only")
	}
	role := os.Getenv("FXCQRS_WAIT_CRASH_ROLE")
	dialect := map[string]fxoutbox.Dialect{"postgresql": fxoutbox.PostgreSQL, "mysql": fxoutbox.MySQL, "sqlite": fxoutbox.SQLite}[os.Getenv("FXCQRS_WAIT_CRASH_DIALECT")]
	db, err := outboxtest.Database{Dialect: dialect, Driver: os.Getenv("FXCQRS_WAIT_CRASH_DRIVER"), DSN: os.Getenv("FXCQRS_WAIT_CRASH_DSN")}.Pool()
	require.NoError(t, err)
	defer db.Close()
	extDB := db
	if dsn := os.Getenv("FXCQRS_WAIT_CRASH_EXTERNAL_DSN"); dsn != os.Getenv("FXCQRS_WAIT_CRASH_DSN") {
		extDB, err = outboxtest.Database{Dialect: dialect, Driver: os.Getenv("FXCQRS_WAIT_CRASH_DRIVER"), DSN: dsn}.Pool()
		require.NoError(t, err)
		defer extDB.Close()
	}
	suffix := os.Getenv("FXCQRS_WAIT_CRASH_SUFFIX")
	requests, paid := "wait_requests_"+suffix, "wait_paid_"+suffix
	ctx := context.Background()

	var apps []*fx.App
	var runner *fxsaga.Runner
	var orderSaga *fxsaga.Saga[Order]
	if role == "orders" || role == "both" {
		apps = append(apps, fx.New(fx.NopLogger,
			fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module,
			brokerOf(t, "orders"),
			fx.Supply(db, fxoutbox.Config{
				Dialect: dialect, Inbox: true,
				Relay: fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond, Lease: 300 * time.Millisecond},
			}),
			fx.Supply(fxsaga.Config{RecoveryInterval: 100 * time.Millisecond, Runner: fxsaga.RunnerConfig{CompensationBackoff: time.Millisecond}}),
			fx.Provide(func() (fxsaga.Store, error) { return fxsaga.NewSQL(db, dialect, fxsaga.Tables{}, 300*time.Millisecond) }),
			fxsaga.Register[Order](func() *fxsaga.Saga[Order] { return crashWaitSaga(extDB, dialect) }),
			fxbus.Route[PaymentRequested](requests),
			fxbus.Subscribe[Paid](paid),
			fxsaga.Resume[Paid](),
			fx.Populate(&runner, &orderSaga),
		))
	}
	if role == "payments" || role == "both" {
		apps = append(apps, fx.New(fx.NopLogger,
			fxcqrs.Module, fxbus.Module, fxoutbox.Module,
			brokerOf(t, "payments"),
			fx.Supply(db, fxoutbox.Config{
				Dialect: dialect, Inbox: true, Tables: paymentsTables,
				Relay: fxoutbox.RelayConfig{PollInterval: 50 * time.Millisecond, Lease: 300 * time.Millisecond},
			}),
			fxbus.Subscribe[PaymentRequested](requests),
			fxbus.Route[Paid](paid),
			fxcqrs.AsEventHandler(func() eventHandler[PaymentRequested] {
				return func(ctx context.Context, e PaymentRequested) error {
					if e.OrderID%4 == 0 {
						return nil // never paid
					}
					if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, dialect.Rebind("INSERT INTO charges (order_id) VALUES (?)"), e.OrderID); err != nil {
						return err
					}
					fxcqrs.Emit(ctx, Paid{OrderID: strconv.Itoa(e.OrderID), Payment: "p"})
					return nil
				}
			}),
		))
	}
	for _, app := range apps {
		require.NoError(t, app.Err())
		require.NoError(t, app.Start(ctx))
	}
	defer func() {
		for _, app := range apps {
			_ = app.Stop(context.Background())
		}
	}()
	fmt.Print(childReady)
	if runner == nil {
		select {} // the payment service alone: it serves until killed
	}
	if mode == "drain" {
		store, err := fxsaga.NewSQL(db, dialect, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			left, err := store.Unfinished(ctx, "crash wait")
			require.NoError(t, err)
			return len(left) == 0
		}, 80*time.Second, 50*time.Millisecond, "sagas left unfinished")
		return
	}
	workers := 4
	if dialect == fxoutbox.SQLite {
		workers = 1
	}
	from, err := strconv.Atoi(os.Getenv("FXCQRS_WAIT_CRASH_FROM"))
	require.NoError(t, err)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; ; i += workers {
				_, err := fxsaga.Run(ctx, runner, orderSaga, Order{ID: i})
				var pending *fxsaga.Pending
				if !errors.As(err, &pending) {
					t.Errorf("order %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait() // until killed
}

// PaymentRequested is what the orders service asks the payment service.
type PaymentRequested struct{ OrderID int }

type eventHandler[E any] func(context.Context, E) error

func (f eventHandler[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

// requestPayment is the wait's step: it emits the request, routed to the
// payment service, in the transaction that saves the saga waiting.
type requestPayment struct{}

func (requestPayment) Act(ctx context.Context, o *Order) error {
	fxcqrs.Emit(ctx, PaymentRequested{OrderID: o.ID})
	return nil
}

func (requestPayment) Compensate(context.Context, *Order) error { return nil }

// crashWaitSaga is the saga the wait crash test runs; its external
// steps record on ext, the fake remote service's database.
func crashWaitSaga(ext *sql.DB, dialect fxoutbox.Dialect) *fxsaga.Saga[Order] {
	return fxsaga.Define[Order]("crash wait",
		external{ext, dialect, "reserve", never, never},
		fxsaga.Await(fxsaga.Wait[Order, Paid]{
			Step:   requestPayment{},
			Key:    func(o *Order) string { return strconv.Itoa(o.ID) },
			Match:  func(p Paid) string { return p.OrderID },
			Within: 1500 * time.Millisecond,
		}),
		external{ext, dialect, "ship", never, never},
	)
}

// brokerOf supplies the JetStream publisher and subscriber of service.
func brokerOf(t *testing.T, service string) fx.Option {
	ps, err := natsjs.New(natsjs.Config{URL: os.Getenv("FXCQRS_WAIT_CRASH_NATS"), Group: service, AckWait: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ps.Close() }) // after the apps stopped
	return fx.Supply(
		fx.Annotate(ps, fx.As(new(message.Publisher))),
		fx.Annotate(ps, fx.As(new(message.Subscriber))),
	)
}

// lockedBuilder is a child's stderr, written by exec's copier and read by
// the test.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
