package main

import (
	"context"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"go.uber.org/fx"
)

// The orders service: the saga under fx, routed to the payment service
// and resumed by its answer.

// ordersApp is the orders service: it runs the saga, which the payment
// service's PaymentConfirmed resumes; settled receives each order whose
// saga ended.
func ordersApp(svc service, o out, opts options, settled chan<- int, runner **fxsaga.Runner, saga **fxsaga.Saga[Order]) *fx.App {
	return fx.New(
		fx.NopLogger,
		// The sagas on the outbox's database, dialect and clock, named once.
		// snippet:wiring
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module, fxsaga.SQLStore,
		svc.options(),
		fx.Supply(svc.db, svc.outboxConfig(opts.clock), o, svc.sql, Courier{Refuses: opts.refuseShipping}, Deadline(opts.deadline)),
		fx.Provide(NewReserveStock, NewRequestPayment, NewBookCourier),
		fxsaga.Register[Order](NewOrderSaga),
		fxbus.Route[PaymentRequested](topics.requests),
		fxbus.Route[RefundRequested](topics.refunds),
		fxbus.Subscribe[PaymentConfirmed](topics.confirmed),
		fxsaga.Resume[PaymentConfirmed](),
		// end snippet
		fxcqrs.AsEventHandler(func() eventFunc[OrderSettled] {
			return func(_ context.Context, e OrderSettled) error {
				settled <- e.ID
				return nil
			}
		}),
		fx.Populate(runner, saga),
	)
}

// ordersSchema is the orders service's own tables: the stock and the
// shipments.
var ordersSchema = []string{
	"CREATE TABLE IF NOT EXISTS stock (sku VARCHAR(64) PRIMARY KEY, qty INTEGER NOT NULL)",
	"INSERT INTO stock (sku, qty) VALUES ('lamp', 3) ON CONFLICT (sku) DO UPDATE SET qty = 3",
	"CREATE TABLE IF NOT EXISTS shipments (key VARCHAR(128) PRIMARY KEY, parcel VARCHAR(64) NOT NULL)",
}
