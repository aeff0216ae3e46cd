package main

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// fakeClock is the wall clock, skipped forward at the test's command: an
// order's time runs out when the example says it passes, however slow the
// machine is, and never before. It runs on from the wall clock, so that
// the rows the crash test's child wrote are due; the relay still polls on
// the wall clock, and finds a schedule due at its next pass.
func fakeClock() clock {
	var skipped atomic.Int64
	return clock{
		now:  func() time.Time { return time.Now().Add(time.Duration(skipped.Load())) },
		pass: func(d time.Duration) { skipped.Add(int64(d)) },
	}
}

// The timeline: the projection follows every order from rows, the unpaid
// order is cancelled by its schedule, the paid one is not.
func TestDurableExample(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, entry(&out, false, time.Hour, fakeClock()))
	assert.Equal(t, strings.Join([]string{
		"(embedded defaults: a SQLite file of this run only)",
		"order 1 placed; it must be paid within 1h0m0s; projection: 1 placed, 0 cancelled",
		"order 2 placed; it must be paid within 1h0m0s; projection: 2 placed, 0 cancelled",
		"order 1 paid: its cancellation is cancelled",
		"order 2: not paid in time, cancelled by its schedule",
		"projection: 2 placed, 1 cancelled",
	}, "\n")+"\n", out.String())
}

// With -crash: a child killed between the commit and the projection's
// handler; after the restart the projection has its order.
func TestDurableExampleCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a child process")
	}
	var out bytes.Buffer
	require.NoError(t, entry(&out, true, time.Hour, fakeClock()))
	assert.Equal(t, strings.Join([]string{
		"(embedded defaults: a SQLite file of this run only)",
		"child: order 99 committed, then killed (SIGKILL) in the projection's handler",
		"after the restart: the projection caught up, 1 placed, 0 cancelled",
		"order 1 placed; it must be paid within 1h0m0s; projection: 2 placed, 0 cancelled",
		"order 2 placed; it must be paid within 1h0m0s; projection: 3 placed, 0 cancelled",
		"order 1 paid: its cancellation is cancelled",
		"order 2: not paid in time, cancelled by its schedule",
		"projection: 3 placed, 1 cancelled",
	}, "\n")+"\n", out.String())
}
