// Command kafka runs an orders service and two replicas of a billing
// service over Kafka with fxbus and kafkabus. Orders are keyed by their
// customer: a customer's orders lie in one partition, and billing handles
// them in order, whichever replica holds the partition, while other
// customers' orders run beside them.
//
// By default the Kafka is franz-go's in-process broker (kfake, three
// brokers), so that it runs anywhere; -brokers takes a real cluster's:
//
//	go run ./examples/kafka
//	go run ./examples/kafka -brokers kafka-1:9092,kafka-2:9092
//
// The settings for production (acks=all, idempotence, min.insync.replicas,
// partitions against consumer replicas) are in kafkabus's package doc.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/fx"
)

type (
	// PlaceOrder is the orders service's command.
	PlaceOrder struct {
		Customer string
		N        int
	}
	// OrderPlaced leaves the orders service, keyed by its customer.
	OrderPlaced struct {
		Customer string `json:"customer"`
		N        int    `json:"n"`
	}
)

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

// billed is what billing handled, per customer, in the order it did.
type billed struct {
	mu  sync.Mutex
	by  map[string][]int
	n   int
	all chan struct{}
}

func (b *billed) add(e OrderPlaced, want int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.by[e.Customer] = append(b.by[e.Customer], e.N)
	if b.n++; b.n == want {
		close(b.all)
	}
}

// ordersBus is what the orders service sends: OrderPlaced, keyed by its
// customer (its contract: testdata/asyncapi-orders.json).
func ordersBus(topic string) fx.Option {
	return fxbus.Route[OrderPlaced](topic, fxbus.KeyBy(func(e OrderPlaced) string { return e.Customer }))
}

// billingBus is what the billing service receives: OrderPlaced, each
// customer's in order (its contract: testdata/asyncapi-billing.json).
func billingBus(topic string) fx.Option {
	return fxbus.Subscribe[OrderPlaced](topic, fxbus.InOrder(), fxbus.InFlight(8))
}

// run places orders for customers and waits until billing handled them.
func run(ctx context.Context, w io.Writer, brokers []string, topic string) error {
	customers, perCustomer := []string{"ada", "grace", "linus"}, 5
	want := len(customers) * perCustomer
	b := &billed{by: map[string][]int{}, all: make(chan struct{})}
	var apps []*fx.App
	defer func() { // the orders service first, then billing
		for _, app := range slices.Backward(apps) {
			_ = app.Stop(context.Background())
		}
	}()
	start := func(name, group string, opts ...fx.Option) (*fxcqrs.Mediator, error) {
		var m *fxcqrs.Mediator
		app := fx.New(append([]fx.Option{
			fx.NopLogger, fxcqrs.Module, fxbus.Module,
			kafkabus.Module(kafkabus.Config{Brokers: brokers, Group: group, Partitions: 8}),
			fx.Populate(&m),
		}, opts...)...)
		if err := app.Start(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		apps = append(apps, app)
		return m, nil
	}
	for _, replica := range []string{"billing-1", "billing-2"} {
		if _, err := start(replica, "billing",
			billingBus(topic),
			fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
				return func(_ context.Context, e OrderPlaced) error { b.add(e, want); return nil }
			}),
		); err != nil {
			return err
		}
	}
	orders, err := start("orders", "orders",
		ordersBus(topic),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced(c))
				return nil
			}
		}),
	)
	if err != nil {
		return err
	}
	for n := 1; n <= perCustomer; n++ {
		for _, c := range customers {
			if err := fxcqrs.Exec(ctx, orders, PlaceOrder{Customer: c, N: n}); err != nil {
				return err
			}
		}
	}
	select {
	case <-b.all:
	case <-ctx.Done():
		return errors.New("billing did not handle every order: " + ctx.Err().Error())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range customers {
		fmt.Fprintf(w, "billing  %-6s orders %v, in order: %v\n", c, b.by[c], slices.IsSorted(b.by[c]))
	}
	fmt.Fprintf(w, "done: %d orders over Kafka, each customer's in the order placed\n", want)
	return nil
}

func main() {
	brokers := flag.String("brokers", "", "a Kafka cluster's seed brokers, host:port,…; empty: an in-process kfake")
	flag.Parse()
	addrs := strings.Split(*brokers, ",")
	if *brokers == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(3))
		if err != nil {
			fmt.Fprintln(os.Stderr, "kafka: kfake:", err)
			os.Exit(1)
		}
		defer c.Close()
		addrs = c.ListenAddrs()
		fmt.Println("broker: franz-go's in-process Kafka (kfake, 3 brokers); -brokers for a real cluster")
	} else {
		fmt.Println("broker: Kafka at", *brokers)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, addrs, fmt.Sprintf("orders.placed.%d", time.Now().UnixNano())); err != nil {
		fmt.Fprintln(os.Stderr, "kafka:", err)
		os.Exit(1)
	}
}
