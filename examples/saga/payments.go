package main

import (
	"context"
	"fmt"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"go.uber.org/fx"
)

// The payment service the saga talks to: it charges what is requested
// and confirms it, and refunds on request.

// snippet:payments

// paymentsApp is the payment service: it charges what is requested and
// confirms it, unless the customer never pays; refunded receives each
// payment it refunds.
func paymentsApp(svc service, o out, opts options, refunded chan<- string) *fx.App {
	return fx.New(
		fx.NopLogger,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		svc.options(),
		fx.Supply(svc.db, svc.outboxConfig(opts.clock)),
		fxbus.Subscribe[PaymentRequested](topics.requests),
		fxbus.Subscribe[RefundRequested](topics.refunds),
		fxbus.Route[PaymentConfirmed](topics.confirmed),
		fxcqrs.AsEventHandler(func() eventFunc[PaymentRequested] {
			return func(ctx context.Context, e PaymentRequested) error {
				if opts.noPayment {
					o.printf("payments: order %d: %d cents requested; the customer never pays", e.OrderID, e.Cents)
					return nil
				}
				payment := fmt.Sprintf("pay-%d", e.OrderID)
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, svc.sql.Q("INSERT INTO payments (payment, cents) VALUES (?, ?) ON CONFLICT (payment) DO NOTHING"), payment, e.Cents); err != nil {
					return err
				}
				o.printf("payments: order %d: %d cents charged (%s)", e.OrderID, e.Cents, payment)
				fxcqrs.Emit(ctx, PaymentConfirmed{OrderID: e.OrderID, Payment: payment})
				return nil
			}
		}),
		// It says nothing of the refund here: that would race with the
		// saga's next compensation in the output. The report shows it.
		fxcqrs.AsEventHandler(func() eventFunc[RefundRequested] {
			return func(ctx context.Context, e RefundRequested) error {
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, svc.sql.Q("UPDATE payments SET refunded = 1 WHERE payment = ?"), e.Payment); err != nil {
					return err
				}
				return fxoutbox.AfterCommit(ctx, func(context.Context) {
					if refunded != nil {
						refunded <- e.Payment
					}
				})
			}
		}),
	)
}

// end snippet

// paymentsSchema is the payment service's own table.
var paymentsSchema = []string{
	"CREATE TABLE IF NOT EXISTS payments (payment VARCHAR(64) PRIMARY KEY, cents INTEGER NOT NULL, refunded INTEGER NOT NULL DEFAULT 0)",
}

// paymentsOutbox are the payment service's outbox tables: beside the
// orders service's in one database (-postgres), they need names of their
// own.
var paymentsOutbox = fxoutbox.Tables{
	Outbox: "payments_outbox", DeadLetters: "payments_dead", Leases: "payments_leases",
	Inbox: "payments_inbox", Scheduled: "payments_scheduled", Migrations: "payments_migrations",
}
