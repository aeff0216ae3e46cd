// Package crashtest re-executes a test binary as a child process that
// runs an application under load, kills it with SIGKILL at random moments
// (seeded, so that a failing run can be replayed), restarts it, and
// finally runs it once more to drain: what durability tests are made of.
// The caller then checks its invariants on what the children left in the
// database: CheckOutbox checks the outbox's. fxcqrs's own crash tests run
// on it; so can a service's, against its own application.
//
// A test and its child live in one test file:
//
//	func TestCrash(t *testing.T) {
//		crashtest.Harness{Child: "TestCrashChild", Env: map[string]string{"DSN": dsn}}.Run(t)
//		// check the database
//	}
//
//	func TestCrashChild(t *testing.T) {
//		switch crashtest.Mode() {
//		case "": t.Skip("started by TestCrash only")
//		case crashtest.Work: // start, crashtest.Ready(), then the workload until killed
//		case crashtest.Drain: // let what is in flight finish, then return
//		}
//	}
package crashtest

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// The modes a child runs in.
const (
	Work  = "work"  // run the workload until killed
	Drain = "drain" // finish what is in flight, then exit
)

const (
	modeEnv  = "FXCQRS_CRASH_MODE"
	roundEnv = "FXCQRS_CRASH_ROUND"
	seedEnv  = "FXCQRS_CRASH_SEED"
)

// Harness is one crash test: what the child runs and how it is killed.
type Harness struct {
	// Child is the test function the child runs, such as "TestCrashChild".
	Child string
	// Env is given to every child beside its mode and round (read it
	// there with Getenv).
	Env map[string]string
	// Rounds is how many times a child is started and killed. Default 5.
	Rounds int
	// MinUp and MaxUp bound how long a child runs before it is killed.
	// Default 150ms and 500ms.
	MinUp, MaxUp time.Duration
	// Seed fixes the kill moments. Default: FXCQRS_CRASH_SEED, else a
	// random one; the test's log says which, to replay a failure.
	Seed uint64
	// AfterKill, when set, runs right after each round's child died, with
	// the round: a test that measures what happens after a death starts
	// its clock there.
	AfterKill func(round int)
	// NoDrain skips the Drain child.
	NoDrain bool
}

// readyLine is what a Work child prints once it works: the harness times
// the kill from there, not from the process's start, which a loaded
// machine can make longer than the whole window.
const readyLine = "crashtest: ready"

// Ready tells the harness that this Work child has started its workload:
// the moment it is killed is drawn from then on. Call it once, after the
// set-up and before the workload.
func Ready() { fmt.Println(readyLine) }

// Mode is the mode a Harness started this process in, or "" when it was
// not started by one.
func Mode() string { return os.Getenv(modeEnv) }

// Round is the round of this Work child, from 1; 0 for the Drain child.
func Round() int {
	n, _ := strconv.Atoi(os.Getenv(roundEnv))
	return n
}

// Run kills Rounds Work children, each at a random moment, then runs a
// Drain child to its end; a Drain child that fails fails t with its
// output.
func (h Harness) Run(t testing.TB) {
	t.Helper()
	if h.Rounds <= 0 {
		h.Rounds = 5
	}
	if h.MinUp <= 0 {
		h.MinUp = 150 * time.Millisecond
	}
	if h.MaxUp <= h.MinUp {
		h.MaxUp = h.MinUp + 350*time.Millisecond
	}
	if h.Seed == 0 {
		h.Seed, _ = strconv.ParseUint(os.Getenv(seedEnv), 10, 64)
	}
	if h.Seed == 0 {
		h.Seed = rand.Uint64()
	}
	t.Logf("crashtest: seed %d (%s=%d replays the kill moments)", h.Seed, seedEnv, h.Seed)
	rnd := rand.New(rand.NewPCG(h.Seed, h.Seed))
	for round := 1; round <= h.Rounds; round++ {
		cmd := h.child(Work, round)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatalf("crashtest: round %d: %v", round, err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("crashtest: start round %d: %v", round, err)
		}
		if err := awaitReady(out, time.Minute); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("crashtest: round %d: %v", round, err)
		}
		// A random moment of the work: mid-transaction, mid-publish,
		// mid-delete.
		up := h.MinUp + time.Duration(rnd.Int64N(int64(h.MaxUp-h.MinUp)))
		time.Sleep(up)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatalf("crashtest: kill round %d: %v", round, err)
		}
		_ = cmd.Wait()
		if h.AfterKill != nil {
			h.AfterKill(round)
		}
	}
	if h.NoDrain {
		return
	}
	if out, err := h.child(Drain, 0).CombinedOutput(); err != nil {
		t.Fatalf("crashtest: the drain failed: %v\n%s", err, out)
	}
}

// awaitReady reads the child's output until its ready line, then keeps
// reading it away so that the child never blocks on a full pipe.
func awaitReady(out io.Reader, within time.Duration) error {
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == readyLine {
				ready <- nil
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		ready <- errors.New("the child ended before it said it was ready (crashtest.Ready)")
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(within):
		return fmt.Errorf("the child did not say it was ready within %v (crashtest.Ready)", within)
	}
}

func (h Harness) child(mode string, round int) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^"+h.Child+"$", "-test.v")
	cmd.Env = append(os.Environ(), modeEnv+"="+mode, roundEnv+"="+strconv.Itoa(round))
	for k, v := range h.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// Promises are the queries CheckOutbox checks the outbox's promises with,
// each returning one id per row, of any type the driver scans (an
// integer, a text, a UUID; two ids are the same when their text is): of what committed (the producer's
// rows), of each delivery to the consumer (duplicates included), and of
// each effect the consumer applied (once per id is the inbox's promise).
type Promises struct {
	Committed, Deliveries, Effects string
}

// Report is what CheckOutbox counted.
type Report struct {
	Committed  int // ids that committed
	Delivered  int // of them, delivered at least once
	Duplicates int // deliveries beyond the first of an id
	Effects    int // effects applied
}

// CheckOutbox checks the outbox's promises on what a crash test left in
// db: every committed id delivered; no delivery or effect of an id that
// never committed (a rolled-back transaction's); each committed id's
// effect applied once. It returns the counts, and an error that lists
// every broken promise.
func CheckOutbox(ctx context.Context, db *sql.DB, p Promises) (Report, error) {
	committed, err := ids(ctx, db, p.Committed)
	if err != nil {
		return Report{}, err
	}
	deliveries, err := ids(ctx, db, p.Deliveries)
	if err != nil {
		return Report{}, err
	}
	effects, err := ids(ctx, db, p.Effects)
	if err != nil {
		return Report{}, err
	}
	r := Report{Committed: len(committed), Effects: len(effects)}
	isCommitted := map[string]bool{}
	for _, id := range committed {
		isCommitted[id] = true
	}
	var broken []error
	delivered := map[string]int{}
	for _, id := range deliveries {
		if !isCommitted[id] {
			broken = append(broken, fmt.Errorf("%s was delivered, and never committed", id))
		}
		if delivered[id]++; delivered[id] > 1 {
			r.Duplicates++
		}
	}
	applied := map[string]int{}
	for _, id := range effects {
		if !isCommitted[id] {
			broken = append(broken, fmt.Errorf("%s had an effect, and never committed", id))
		}
		applied[id]++
	}
	for _, id := range committed {
		if delivered[id] > 0 {
			r.Delivered++
		} else {
			broken = append(broken, fmt.Errorf("%s committed, and was never delivered", id))
		}
		if n := applied[id]; n != 1 {
			broken = append(broken, fmt.Errorf("%s committed, and had its effect %d times", id, n))
		}
	}
	if len(broken) > 10 {
		broken = append(broken[:10], fmt.Errorf("and %d more", len(broken)-10))
	}
	return r, errors.Join(broken...)
}

// ids runs query and returns its rows' one column as text, so that an id
// of any type compares (an integer, a text, a UUID or bytes).
func ids(ctx context.Context, db *sql.DB, query string) ([]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("crashtest: %s: %w", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id any
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("crashtest: %s: %w", query, err)
		}
		switch v := id.(type) {
		case nil:
			return nil, fmt.Errorf("crashtest: %s: a NULL id", query)
		case []byte:
			out = append(out, string(v))
		default:
			out = append(out, fmt.Sprint(v))
		}
	}
	return out, rows.Err()
}
