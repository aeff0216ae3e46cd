package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// syncBuffer is the run's output, read by the test while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runExample runs the example on a fake clock with the shop's deadline,
// 30 minutes; once the saga waits, after (if set) runs with the clock.
func runExample(t *testing.T, opts options, after func(*outboxtest.Clock, *syncBuffer)) string {
	t.Helper()
	clock := outboxtest.NewClock(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC))
	var out syncBuffer
	opts.clock, opts.deadline, opts.order = clock, 30*time.Minute, 7
	if after != nil {
		opts.waiting = func() { after(clock, &out) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, run(ctx, &out, backend{dir: t.TempDir()}, "both", opts))
	return out.String()
}

func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// The payment service's confirmation resumes the waiting saga, which
// books the courier.
func TestSagaWaitsForThePayment(t *testing.T) {
	assert.Equal(t, lines(
		"saga order 7: reserve stock, request payment and wait for it (30m0s), book courier",
		"orders:   act  reserve stock: one lamp",
		"orders:   act  request payment: 1999 cents; the saga waits for PaymentConfirmed",
		"payments: order 7: 1999 cents charged (pay-7)",
		"orders:   act  book courier: parcel-7",
		"fxsaga.Run had returned at once: waiting for main.PaymentConfirmed 7; the saga is now COMPLETED",
		"orders:   2 lamps in stock, 1 shipment",
		"payments: 1 payment (0 refunded)",
		"saga log:",
		"  step 0 act        ok",
		"  step 1 act        ok",
		"  step 1 resume     ok",
		"  step 2 act        ok",
	), runExample(t, options{}, nil))
}

// The customer never pays: 30 minutes on, the deadline compensates the
// saga, and not a moment before.
func TestSagaDeadlineCompensates(t *testing.T) {
	out := runExample(t, options{noPayment: true}, func(c *outboxtest.Clock, out *syncBuffer) {
		require.Eventually(t, func() bool { return strings.Contains(out.String(), "never pays") }, time.Minute, time.Millisecond)
		c.Advance(29 * time.Minute)
		assert.NotContains(t, out.String(), "undo")
		c.Advance(time.Minute)
	})
	assert.Equal(t, lines(
		"saga order 7: reserve stock, request payment and wait for it (30m0s), book courier",
		"orders:   act  reserve stock: one lamp",
		"orders:   act  request payment: 1999 cents; the saga waits for PaymentConfirmed",
		"payments: order 7: 1999 cents requested; the customer never pays",
		"orders:   undo request payment: never paid, nothing to refund",
		"orders:   undo reserve stock: one lamp back",
		"fxsaga.Run had returned at once: waiting for main.PaymentConfirmed 7; the saga is now COMPENSATED",
		"  because step RequestPayment: no main.PaymentConfirmed within 30m0s",
		"orders:   3 lamps in stock, 0 shipment",
		"payments: 0 payment (0 refunded)",
		"saga log:",
		"  step 0 act        ok",
		"  step 1 act        ok",
		"  step 1 deadline   ok",
		"  step 1 compensate ok",
		"  step 0 compensate ok",
	), out)
}

// The courier refuses after the payment came: the payment is refunded by
// the payment service, the stock released.
func TestSagaCompensatesAPaidOrder(t *testing.T) {
	assert.Equal(t, lines(
		"saga order 7: reserve stock, request payment and wait for it (30m0s), book courier",
		"orders:   act  reserve stock: one lamp",
		"orders:   act  request payment: 1999 cents; the saga waits for PaymentConfirmed",
		"payments: order 7: 1999 cents charged (pay-7)",
		"orders:   act  book courier: refused",
		"orders:   undo request payment: refund of pay-7 requested",
		"orders:   undo reserve stock: one lamp back",
		"fxsaga.Run had returned at once: waiting for main.PaymentConfirmed 7; the saga is now COMPENSATED",
		"  because step BookCourier: no courier today",
		"orders:   3 lamps in stock, 0 shipment",
		"payments: 1 payment (1 refunded)",
		"saga log:",
		"  step 0 act        ok",
		"  step 1 act        ok",
		"  step 1 resume     ok",
		"  step 2 act        no courier today",
		"  step 1 compensate ok",
		"  step 0 compensate ok",
	), runExample(t, options{refuseShipping: true}, nil))
}

// The -mermaid flag's diagram, which the README shows: a change to the
// saga or to the renderer shows here first.
func TestMermaid(t *testing.T) {
	d := NewOrderSaga(nil, nil, nil, Deadline(30*time.Minute)).Mermaid()
	assert.True(t, strings.HasPrefix(d, "flowchart TD\n"), d)
	for _, edge := range []string{
		"act1{{RequestPayment}}", `act1 -- "main.PaymentConfirmed" --> act2`,
		`act1 -. "no main.PaymentConfirmed within 30m0s" .-> comp1`,
		"act0 --> act1", "act2 -. fails .-> comp1", "comp1 --> comp0", "act0 -. fails .-> compensated",
	} {
		assert.Contains(t, d, edge)
	}
}

// -postgres and -nats, the two services as two runs (each what a process
// of its role does): the payment service serves, the orders service's
// saga waits for it and completes.
func TestTwoProcesses(t *testing.T) {
	natsURL := outboxtest.Env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	u, err := url.Parse(natsURL)
	require.NoError(t, err)
	outboxtest.Reachable(t, "FXCQRS_NATS_URL", u.Host)
	pg := outboxtest.OpenEmpty(t, fxoutbox.PostgreSQL).DSN // a schema of the test's own
	// Topics of the test's own, deleted after it.
	old := topics
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	topics.requests, topics.refunds, topics.confirmed = old.requests+suffix, old.refunds+suffix, old.confirmed+suffix
	t.Cleanup(func() {
		if conn, err := nats.Connect(natsURL); err == nil {
			if js, err := conn.JetStream(); err == nil {
				for _, s := range []string{topics.requests, topics.refunds, topics.confirmed} {
					_ = js.DeleteStream(s)
				}
			}
			conn.Close()
		}
		topics = old
	})
	order := int(time.Now().UnixNano() % 1_000_000_000)
	clock := wallClock{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var payments syncBuffer
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, &payments, backend{dir: t.TempDir(), pg: pg, natsURL: natsURL}, "payments", options{clock: clock})
	}()
	require.Eventually(t, func() bool { return strings.Contains(payments.String(), "serving") }, time.Minute, time.Millisecond)
	var orders syncBuffer
	require.NoError(t, run(ctx, &orders, backend{dir: t.TempDir(), pg: pg, natsURL: natsURL}, "orders",
		options{clock: clock, deadline: time.Minute, order: order}))
	cancel()
	require.NoError(t, <-served)
	assert.Contains(t, orders.String(), "the saga is now COMPLETED", orders.String())
	assert.Contains(t, orders.String(), "payments: 1 payment (0 refunded)")
	assert.Contains(t, payments.String(), fmt.Sprintf("payments: order %d: 1999 cents charged", order))
}
