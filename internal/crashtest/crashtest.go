// Package crashtest re-executes a test binary as a child process that
// runs an application under load, kills it with SIGKILL at random moments
// (seeded, so that a failing run can be replayed), restarts it, and
// finally runs it once more to drain: what durability tests are made of.
// The caller then checks its invariants on what the children left in the
// database.
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
//		case crashtest.Work: // run the workload until killed
//		case crashtest.Drain: // let what is in flight finish, then return
//		}
//	}
package crashtest

import (
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
}

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
		if err := cmd.Start(); err != nil {
			t.Fatalf("crashtest: start round %d: %v", round, err)
		}
		// A random moment: mid-transaction, mid-publish, mid-delete.
		up := h.MinUp + time.Duration(rnd.Int64N(int64(h.MaxUp-h.MinUp)))
		time.Sleep(up)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatalf("crashtest: kill round %d: %v", round, err)
		}
		_ = cmd.Wait()
	}
	if out, err := h.child(Drain, 0).CombinedOutput(); err != nil {
		t.Fatalf("crashtest: the drain failed: %v\n%s", err, out)
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
