package fxsaga_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The crash test: a process (this test binary, re-executed) runs sagas of
// three steps, each calling a fake external service, and is killed with
// SIGKILL at random moments, five times; each restart first recovers what
// the last left, and a final process drains. Every fifth order's shipping
// fails, so its saga compensates; every 35th order's refund fails too, so
// its saga ends Failed. The external service lives in the database,
// outside the steps' transactions (it commits on its own, as a remote
// service would): it records every call, and applies each effect once per
// idempotency key. Afterwards every saga is final and the one it was
// designed to be; no step acted after its saga began compensating; and
// each (order, step, act or compensate) was called under one key only, so
// that the service's deduplication held across the crashes.

const sagaCrashRounds = 5

// childReady is what a child prints once it recovered and runs new sagas.
const childReady = "recovered\n"

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test kills processes; not with -short")
	}
	t.Parallel()
	for _, dialect := range []fxoutbox.Dialect{fxoutbox.PostgreSQL, fxoutbox.MySQL, fxoutbox.SQLite} {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			sagaCrash(t, openDatabase(t, dialect))
		})
	}
}

func sagaCrash(t *testing.T, d database) {
	ext := externalDatabase(t, d)
	serial := map[fxoutbox.Dialect]string{
		fxoutbox.PostgreSQL: "BIGSERIAL PRIMARY KEY",
		fxoutbox.MySQL:      "BIGINT AUTO_INCREMENT PRIMARY KEY",
		fxoutbox.SQLite:     "INTEGER PRIMARY KEY AUTOINCREMENT",
	}[d.Dialect]
	for _, ddl := range []string{
		"CREATE TABLE calls (seq " + serial + ", order_id BIGINT NOT NULL, step VARCHAR(16) NOT NULL, action VARCHAR(16) NOT NULL, saga_key VARCHAR(128) NOT NULL)",
		"CREATE TABLE effects (saga_key VARCHAR(128) PRIMARY KEY, order_id BIGINT NOT NULL)",
	} {
		_, err := ext.DB.Exec(ddl)
		require.NoError(t, err)
	}
	child := func(mode string, round int) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(),
			"FXCQRS_SAGA_CRASH="+mode,
			"FXCQRS_SAGA_CRASH_DIALECT="+d.Dialect.String(),
			"FXCQRS_SAGA_CRASH_DSN="+d.DSN,
			"FXCQRS_SAGA_CRASH_EXTERNAL_DSN="+ext.DSN,
			"FXCQRS_SAGA_CRASH_DRIVER="+d.Driver,
			"FXCQRS_SAGA_CRASH_FROM="+strconv.Itoa(round*1_000_000),
		)
		return cmd
	}
	for round := 1; round <= sagaCrashRounds; round++ {
		cmd := child("run", round)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		// Once it recovered the last one's sagas and runs new ones, a
		// random moment: mid-step, mid-save, mid-compensation.
		ready := make([]byte, len(childReady))
		_, err = io.ReadFull(stdout, ready)
		require.NoError(t, err, "round %d: the child never got ready: %s", round, stderr.String())
		require.Equal(t, childReady, string(ready))
		var rest strings.Builder
		copied := make(chan struct{})
		go func() {
			_, _ = io.Copy(&rest, stdout)
			close(copied)
		}()
		time.Sleep(time.Duration(200+rand.IntN(300)) * time.Millisecond)
		require.NoError(t, cmd.Process.Kill()) // SIGKILL
		<-copied
		_ = cmd.Wait()
		require.NotContains(t, rest.String(), "--- FAIL", "round %d: the child failed before it was killed", round)
	}
	out, err := child("drain", 0).CombinedOutput()
	require.NoError(t, err, "drain: %s", out)

	// Every saga final, and the one it was designed to be.
	rows, err := d.DB.Query("SELECT status, context FROM fxcqrs_sagas")
	require.NoError(t, err)
	outcomes := map[fxsaga.Status]int{}
	for rows.Next() {
		var status, context string
		require.NoError(t, rows.Scan(&status, &context))
		id := orderID(t, context)
		want := fxsaga.Completed
		switch {
		case id%35 == 0:
			want = fxsaga.Failed
		case id%5 == 0:
			want = fxsaga.Compensated
		}
		assert.Equal(t, want, fxsaga.Status(status), "order %d", id)
		outcomes[fxsaga.Status(status)]++
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	require.NotZero(t, outcomes[fxsaga.Completed])
	require.NotZero(t, outcomes[fxsaga.Compensated])

	// Strict backward: per order, no act called after the first
	// compensation was.
	assert.Zero(t, count(t, ext.DB, `SELECT COUNT(*) FROM calls a JOIN calls c
		ON a.order_id = c.order_id AND a.action = 'act' AND c.action = 'compensate' AND a.seq > c.seq`),
		"a step acted after its saga began compensating")
	// One key per (order, step, act or compensate), across restarts: the
	// external service's deduplication held.
	assert.Zero(t, count(t, ext.DB, `SELECT COUNT(*) FROM (SELECT order_id, step, action FROM calls
		GROUP BY order_id, step, action HAVING COUNT(DISTINCT saga_key) > 1) unstable`))
	// Every completed saga's three effects, every compensated one's four.
	assert.Equal(t, 3*outcomes[fxsaga.Completed]+4*outcomes[fxsaga.Compensated]+2*outcomes[fxsaga.Failed],
		count(t, ext.DB, "SELECT COUNT(*) FROM effects"))
	// The Failed ones listed, for a person to look at.
	store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
	require.NoError(t, err)
	failed, err := store.Failed(context.Background())
	require.NoError(t, err)
	assert.Len(t, failed, outcomes[fxsaga.Failed])
	for _, st := range failed {
		assert.Contains(t, st.Error, "charge compensate refused")
	}
	calls, keys := count(t, ext.DB, "SELECT COUNT(*) FROM calls"), count(t, ext.DB, "SELECT COUNT(DISTINCT saga_key) FROM calls")
	t.Logf("%d kills: %v; %d external calls, under %d keys: %d re-run after a crash (the failing refunds' retries aside)",
		sagaCrashRounds, outcomes, calls, keys, calls-keys-2*outcomes[fxsaga.Failed])
}

func orderID(t *testing.T, context string) int {
	t.Helper()
	var o Order
	require.NoError(t, json.Unmarshal([]byte(context), &o))
	return o.ID
}

// external is a step that calls the fake external service: it records
// the call, then applies the effect once per idempotency key, committing
// on its own, outside the step's transaction.
type external struct {
	db       *sql.DB
	dialect  fxoutbox.Dialect
	name     string
	failAct  func(id int) bool
	failComp func(id int) bool
}

func (s external) call(ctx context.Context, o *Order, action string) error {
	key := fxsaga.IdempotencyKey(ctx)
	_, err := s.db.ExecContext(ctx, s.dialect.Rebind("INSERT INTO calls (order_id, step, action, saga_key) VALUES (?, ?, ?, ?)"), o.ID, s.name, action, key)
	if err != nil {
		return err
	}
	if action == "act" && s.failAct(o.ID) || action == "compensate" && s.failComp(o.ID) {
		return fmt.Errorf("%s %s refused", s.name, action)
	}
	insert := "INSERT INTO effects (saga_key, order_id) VALUES (?, ?) ON CONFLICT (saga_key) DO NOTHING"
	if s.dialect == fxoutbox.MySQL {
		insert = "INSERT IGNORE INTO effects (saga_key, order_id) VALUES (?, ?)"
	}
	_, err = s.db.ExecContext(ctx, s.dialect.Rebind(insert), key, o.ID)
	return err
}

func (s external) Name() string { return s.name }

func (s external) Act(ctx context.Context, o *Order) error { return s.call(ctx, o, "act") }

func (s external) Compensate(ctx context.Context, o *Order) error {
	return s.call(ctx, o, "compensate")
}

func never(int) bool { return false }

// TestCrashChild is the process TestCrash kills: it recovers what the
// last one left, then runs new sagas until killed ("run"), or recovers
// until nothing is left ("drain").
func TestCrashChild(t *testing.T) {
	mode := os.Getenv("FXCQRS_SAGA_CRASH")
	if mode == "" {
		t.Skip("started by TestCrash only")
	}
	dialect := map[string]fxoutbox.Dialect{"postgresql": fxoutbox.PostgreSQL, "mysql": fxoutbox.MySQL, "sqlite": fxoutbox.SQLite}[os.Getenv("FXCQRS_SAGA_CRASH_DIALECT")]
	db, err := outboxtest.Database{Dialect: dialect, Driver: os.Getenv("FXCQRS_SAGA_CRASH_DRIVER"), DSN: os.Getenv("FXCQRS_SAGA_CRASH_DSN")}.Pool()
	require.NoError(t, err)
	defer db.Close()
	extDB := db
	if dsn := os.Getenv("FXCQRS_SAGA_CRASH_EXTERNAL_DSN"); dsn != os.Getenv("FXCQRS_SAGA_CRASH_DSN") {
		extDB, err = outboxtest.Database{Dialect: dialect, Driver: os.Getenv("FXCQRS_SAGA_CRASH_DRIVER"), DSN: dsn}.Pool()
		require.NoError(t, err)
		defer extDB.Close()
	}

	// A short lease: the next process takes the killed one's sagas over
	// soon after.
	r, store, _ := newSQLRunner(t, database{Dialect: dialect, DB: db}, setup{
		lease:  300 * time.Millisecond,
		config: fxsaga.RunnerConfig{CompensationAttempts: 3, CompensationBackoff: time.Millisecond},
	})
	s := fxsaga.Define[Order]("crash",
		external{extDB, dialect, "reserve", never, never},
		external{extDB, dialect, "charge", never, func(id int) bool { return id%35 == 0 }},
		external{extDB, dialect, "ship", func(id int) bool { return id%5 == 0 }, never},
	)
	ctx := context.Background()

	recoverAll := func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			requireOutcomes(t, fxsaga.Recover(ctx, r, s))
			left, err := store.Unfinished(ctx, "crash")
			require.NoError(t, err)
			if len(left) == 0 {
				return
			}
			require.True(t, time.Now().Before(deadline), "%d sagas left unfinished", len(left))
			time.Sleep(50 * time.Millisecond) // the killed owner's lease expires
		}
	}
	recoverAll()
	if mode == "drain" {
		return
	}
	fmt.Print(childReady)
	workers := 4
	if dialect == fxoutbox.SQLite {
		workers = 1 // one writer: the external service's own commits wait for none of ours
	}
	from, err := strconv.Atoi(os.Getenv("FXCQRS_SAGA_CRASH_FROM"))
	require.NoError(t, err)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := from + w; ; i += workers {
				if _, err := fxsaga.Run(ctx, r, s, Order{ID: i}); !outcomes(err) {
					t.Errorf("order %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait() // until killed
}

// outcomes reports whether err is nil or only sagas' outcomes (*Error),
// joined.
func outcomes(err error) bool {
	if err == nil {
		return true
	}
	if _, ok := err.(*fxsaga.Error); ok { //nolint:errorlint // an outcome, not an error that wraps one
		return true
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			if !outcomes(e) {
				return false
			}
		}
		return true
	}
	return false
}

func requireOutcomes(t *testing.T, err error) {
	t.Helper()
	if !outcomes(err) {
		t.Fatalf("not a saga's outcome: %v", err)
	}
}

// externalDatabase is where a test's fake remote service keeps what it
// records: d itself, but on SQLite a database of its own, since a step's
// transaction holds SQLite's one connection (its single writer), and a
// remote service is not in the saga's database anyway.
func externalDatabase(t testing.TB, d database) database {
	t.Helper()
	if d.Dialect != fxoutbox.SQLite {
		return d
	}
	return outboxtest.OpenEmpty(t, fxoutbox.SQLite)
}
