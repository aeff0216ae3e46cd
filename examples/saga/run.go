package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// A run: the services a role runs, and the order's saga from its start
// to its end.

// run runs role ("both", "orders" or "payments") on b: the order's saga
// for both and orders; the payment service, until ctx ends, for payments.
func run(ctx context.Context, w io.Writer, b backend, role string, opts options) (err error) {
	o := out{mu: &sync.Mutex{}, w: w}
	var orders, payments service
	if role != "orders" {
		var closePayments func() error
		payments, closePayments, err = b.open("payments", paymentsSchema, paymentsOutbox, false)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, closePayments()) }()
		refunded := make(chan string, 1)
		if role == "payments" {
			refunded = nil
		}
		app := paymentsApp(payments, o, opts, refunded)
		if err := app.Start(ctx); err != nil {
			return err
		}
		defer app.Stop(context.Background()) //nolint:errcheck // the run's error matters more
		if role == "payments" {
			o.printf("payments: serving until interrupted")
			<-ctx.Done()
			return nil
		}
		var closeOrders func() error
		orders, closeOrders, err = b.open("orders", ordersSchema, fxoutbox.Tables{}, true)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, closeOrders()) }()
		return runOrders(ctx, orders, payments, o, opts, refunded)
	}
	var closeOrders func() error
	orders, closeOrders, err = b.open("orders", ordersSchema, fxoutbox.Tables{}, true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeOrders()) }()
	if b.pg != "" {
		payments = service{db: orders.db, sql: orders.sql} // one database: report the payment too
	}
	return runOrders(ctx, orders, payments, o, opts, nil)
}

// runOrders places the order with the saga, waits until it settles (and,
// when it compensated a paid order, for the refund, if this process runs
// the payment service: refunded is not nil), and reports what the
// databases hold.
func runOrders(ctx context.Context, orders, payments service, o out, opts options, refunded <-chan string) error {
	var (
		runner  *fxsaga.Runner
		saga    *fxsaga.Saga[Order]
		settled = make(chan int, 1)
	)
	app := ordersApp(orders, o, opts, settled, &runner, &saga)
	if err := app.Start(ctx); err != nil {
		return err
	}
	defer app.Stop(context.Background()) //nolint:errcheck // the run's error matters more

	o.printf("saga order %d: reserve stock, request payment and wait for it (%v), book courier", opts.order, opts.deadline)
	_, err := fxsaga.Run(ctx, runner, saga, Order{ID: opts.order, SKU: "lamp", Cents: 1999})
	var pending *fxsaga.Pending
	if !errors.As(err, &pending) {
		return fmt.Errorf("the saga did not wait: %w", err)
	}
	if opts.waiting != nil {
		opts.waiting()
	}
	select {
	case <-settled:
	case <-ctx.Done():
		return ctx.Err()
	}
	st, err := runner.Store().Load(ctx, pending.SagaID)
	if err != nil {
		return err
	}
	var order Order
	if err := json.Unmarshal(st.Context, &order); err != nil {
		return err
	}
	if refunded != nil && st.Status == fxsaga.Compensated && order.Payment != "" {
		select { // the refund, which the payment service makes on its own
		case <-refunded:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	o.printf("fxsaga.Run had returned at once: waiting for %s %s; the saga is now %s", pending.Event, pending.Key, st.Status)
	if st.Error != "" {
		o.printf("  because %s", st.Error)
	}
	return report(ctx, o, orders, payments, order, st.ID)
}
