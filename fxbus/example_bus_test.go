package fxbus_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"go.uber.org/fx"
)

// The examples' events, as both services know them.
type (
	OrderShipped struct {
		ID    int    `json:"id"`
		Order string `json:"order"`
	}
	ShipOrder struct{ ID int }
)

type shipOrder struct{}

// ShipAll ships several orders' parcels, in order.
type ShipAll struct{ Orders []string }

type shipAll struct{}

func (shipAll) Handle(ctx context.Context, c ShipAll) error {
	for i, order := range c.Orders {
		fxcqrs.Emit(ctx, OrderShipped{ID: i, Order: order})
	}
	return nil
}

func (shipOrder) Handle(ctx context.Context, c ShipOrder) error {
	fxcqrs.Emit(ctx, OrderShipped{ID: c.ID})
	return nil
}

type onShipped func(context.Context, OrderShipped) error

func (f onShipped) Handle(ctx context.Context, e OrderShipped) error { return f(ctx, e) }

// startExample starts an application and returns its mediator and a stop.
func startExample(opts ...fx.Option) (*fxcqrs.Mediator, func()) {
	var m *fxcqrs.Mediator
	app := fx.New(append([]fx.Option{fx.NopLogger, fxcqrs.Module, fxbus.Module, fx.Populate(&m)}, opts...)...)
	if err := app.Start(context.Background()); err != nil {
		panic(err)
	}
	return m, func() { _ = app.Stop(context.Background()) }
}

// Two services in one program, over the in-process broker (no broker in
// the graph): the shipping service routes OrderShipped to a topic, the
// mailing service subscribes to it. A broker preset's module in each
// graph (natsjs.Module, amqpbus.Module, redisbus.Module) puts the same
// services on a real broker.
func ExampleRoute() {
	got := make(chan OrderShipped, 1)
	_, stopMailing := startExample(
		fxbus.Subscribe[OrderShipped]("example-shipments"),
		fxcqrs.AsEventHandler(func() onShipped {
			return func(_ context.Context, e OrderShipped) error {
				got <- e
				return nil
			}
		}),
	)
	defer stopMailing()
	shipping, stopShipping := startExample(
		fxbus.Route[OrderShipped]("example-shipments"),
		fxcqrs.AsCommandHandler(func() shipOrder { return shipOrder{} }),
	)
	defer stopShipping()

	if err := fxcqrs.Exec(context.Background(), shipping, ShipOrder{ID: 7}); err != nil {
		panic(err)
	}
	select {
	case e := <-got:
		fmt.Println("mailing: order", e.ID, "shipped, over the broker")
	case <-time.After(time.Minute):
		fmt.Println("nothing arrived")
	}
	// Output:
	// mailing: order 7 shipped, over the broker
}

// A keyed route and a subscription that keeps each key's order: an
// order's events are handled in the order they were emitted, while
// different orders' events may run at once.
func ExampleKeyBy() {
	var (
		mu   sync.Mutex
		seen = map[string][]int{}
		all  = make(chan struct{}, 6)
	)
	_, stopMailing := startExample(
		fxbus.Subscribe[OrderShipped]("example-keyed", fxbus.InOrder()),
		fxcqrs.AsEventHandler(func() onShipped {
			return func(_ context.Context, e OrderShipped) error {
				mu.Lock()
				seen[e.Order] = append(seen[e.Order], e.ID)
				mu.Unlock()
				all <- struct{}{}
				return nil
			}
		}),
	)
	defer stopMailing()
	shipping, stopShipping := startExample(
		fxbus.Route[OrderShipped]("example-keyed", fxbus.KeyBy(func(e OrderShipped) string { return e.Order })),
		fxcqrs.AsCommandHandler(func() shipAll { return shipAll{} }),
	)
	defer stopShipping()

	if err := fxcqrs.Exec(context.Background(), shipping, ShipAll{Orders: []string{"a", "b", "a", "b", "a", "b"}}); err != nil {
		panic(err)
	}
	for range 6 {
		select {
		case <-all:
		case <-time.After(time.Minute):
			fmt.Println("not all arrived")
			return
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Println("order", k, "events", strings.Trim(fmt.Sprint(seen[k]), "[]"))
	}
	// Output:
	// order a events 0 2 4
	// order b events 1 3 5
}
