// Command saga places an order as a saga that waits for another service.
// Two services run in this program, each with its own SQLite database and
// outbox, talking through the in-process broker:
//
//	orders:   reserve stock; request the payment and wait for it (30m); book a courier
//	payments: PaymentRequested → charges the card → PaymentConfirmed
//
// The saga holds nothing while it waits: fxsaga.Run returns at once, and
// the PaymentConfirmed that arrives resumes it. Each step commits with
// its writes (the outbox's unit of work); the payment's wait commits with
// the request that leaves for the payment service, so the answer cannot
// come before the saga waits for it.
//
//	go run ./examples/saga
//	go run ./examples/saga -no-payment      # the customer never pays: at the deadline the saga compensates
//	go run ./examples/saga -fail-shipping   # the courier refuses: the payment is refunded, the stock released
//	go run ./examples/saga -mermaid         # the saga as a Mermaid flowchart
//
// It needs no server: SQLite files in a temporary directory and the
// in-process broker of fxbus. The payment deadline is 30 minutes, on the
// clock the run is given; this command gives it -deadline (2s by
// default) so that -no-payment ends soon.
//
// As two processes, on PostgreSQL (one database, each service's outbox
// tables of its own) and NATS JetStream:
//
//	go run ./examples/saga -postgres $PG -nats nats://127.0.0.1:4222 -role payments   # serves until ^C; -no-payment here
//	go run ./examples/saga -postgres $PG -nats nats://127.0.0.1:4222 -role orders -order 8
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	refuse := flag.Bool("fail-shipping", false, "the courier refuses: the saga compensates")
	noPayment := flag.Bool("no-payment", false, "the customer never pays: at the deadline the saga compensates")
	deadline := flag.Duration("deadline", 2*time.Second, "how long the saga waits for the payment")
	mermaid := flag.Bool("mermaid", false, "print the saga as a Mermaid flowchart and exit")
	pg := flag.String("postgres", "", "PostgreSQL URL for both services (default: a SQLite file each)")
	natsURL := flag.String("nats", "", "NATS JetStream URL (default: fxbus's in-process broker)")
	role := flag.String("role", "both", "both (one process), or orders or payments (two processes: needs -postgres and -nats)")
	order := flag.Int("order", 7, "the order's id")
	flag.Parse()
	if *mermaid {
		fmt.Print(NewOrderSaga(nil, nil, nil, Deadline(30*time.Minute)).Mermaid())
		return
	}
	if err := start(*role, *pg, *natsURL, options{
		refuseShipping: *refuse, noPayment: *noPayment, deadline: *deadline, order: *order, clock: wallClock{},
	}); err != nil {
		fmt.Fprintln(os.Stderr, "saga:", err)
		os.Exit(1)
	}
}

// start says where the services run, and runs role there: the order's
// saga within a minute, or the payment service until interrupted.
func start(role, pg, natsURL string, opts options) error {
	switch {
	case role != "both" && role != "orders" && role != "payments":
		return fmt.Errorf("-role %q: both, orders or payments", role)
	case role != "both" && (pg == "" || natsURL == ""):
		return errors.New("two processes need -postgres and -nats: the embedded SQLite files and broker are one process's")
	}
	where := []string{"SQLite files in a temporary directory", "fxbus's in-process broker"}
	if pg != "" {
		where[0] = "PostgreSQL"
	}
	if natsURL != "" {
		where[1] = "NATS JetStream"
	}
	if pg == "" || natsURL == "" {
		fmt.Printf("embedded defaults: %s, %s (no server needed)\n", where[0], where[1])
	} else {
		fmt.Printf("%s: %s, %s\n", role, where[0], where[1])
	}
	dir, err := os.MkdirTemp("", "fxcqrs-saga-example")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if role != "payments" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	err = run(ctx, os.Stdout, backend{dir: dir, pg: pg, natsURL: natsURL}, role, opts)
	if role == "both" && natsURL != "" {
		// One process ran both services: nothing else needs the streams.
		// (Two processes share them; remove them by hand when done.)
		removeStreams(natsURL, topics.requests, topics.refunds, topics.confirmed)
	}
	return err
}

// removeStreams deletes the JetStream streams the run made, so that a
// shared server keeps nothing of it. A stream is named after its topic
// today; natsjs may map topics to other names (issue 40).
func removeStreams(url string, names ...string) {
	nc, err := nats.Connect(url)
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return
	}
	for _, n := range names {
		_ = js.DeleteStream(n)
	}
}

// options are what a run varies.
type options struct {
	refuseShipping bool
	noPayment      bool
	deadline       time.Duration
	order          int
	clock          Clock
	// waiting, if set, is called once Run has returned the saga waiting
	// (a test moves its clock there).
	waiting func()
}

// Clock is the time both services' outboxes and the saga runner read.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
