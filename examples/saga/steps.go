package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// The saga's steps: ordinary types with ordinary constructors, whose
// writes commit in the step's transaction (fxoutbox.Tx) and whose events
// leave through the outbox.

// ReserveStock takes one unit of the order's SKU.
type ReserveStock struct {
	out out
	sql SQL
}

// NewReserveStock is the step's constructor: any dependency will do.
func NewReserveStock(o out, q SQL) *ReserveStock { return &ReserveStock{o, q} }

// Act reserves a unit, in the step's transaction.
func (s *ReserveStock) Act(ctx context.Context, o *Order) error {
	res, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.sql.Q("UPDATE stock SET qty = qty - 1 WHERE sku = ? AND qty > 0"), o.SKU)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s is out of stock", o.SKU)
	}
	s.out.printf("orders:   act  reserve stock: one %s", o.SKU)
	return nil
}

// Compensate releases the unit; the saga is over.
func (s *ReserveStock) Compensate(ctx context.Context, o *Order) error {
	if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.sql.Q("UPDATE stock SET qty = qty + 1 WHERE sku = ?"), o.SKU); err != nil {
		return err
	}
	s.out.printf("orders:   undo reserve stock: one %s back", o.SKU)
	fxcqrs.Emit(ctx, OrderSettled{ID: o.ID})
	return nil
}

// snippet:step

// RequestPayment asks the payment service for the order's amount; the
// saga then waits for its PaymentConfirmed (see NewOrderSaga).
type RequestPayment struct{ out out }

// NewRequestPayment is the step's constructor.
func NewRequestPayment(o out) *RequestPayment { return &RequestPayment{o} }

// Act emits the request, routed to the payment service through the
// outbox: it leaves once the saga is saved waiting.
func (s *RequestPayment) Act(ctx context.Context, o *Order) error {
	fxcqrs.Emit(ctx, PaymentRequested{OrderID: o.ID, Cents: o.Cents})
	s.out.printf("orders:   act  request payment: %d cents; the saga waits for PaymentConfirmed", o.Cents)
	return nil
}

// Compensate refunds the payment if it came, and withdraws the request if
// it did not.
func (s *RequestPayment) Compensate(ctx context.Context, o *Order) error {
	if o.Payment == "" {
		s.out.printf("orders:   undo request payment: never paid, nothing to refund")
		return nil
	}
	fxcqrs.Emit(ctx, RefundRequested{Payment: o.Payment})
	s.out.printf("orders:   undo request payment: refund of %s requested", o.Payment)
	return nil
}

// end snippet

// BookCourier books the parcel; it fails when the courier refuses.
type BookCourier struct {
	out    out
	sql    SQL
	refuse bool
}

// Courier says whether the courier refuses (the -fail-shipping flag).
type Courier struct{ Refuses bool }

// NewBookCourier is the step's constructor.
func NewBookCourier(o out, q SQL, c Courier) *BookCourier { return &BookCourier{o, q, c.Refuses} }

// Act books the courier, once per idempotency key.
func (s *BookCourier) Act(ctx context.Context, o *Order) error {
	if s.refuse {
		s.out.printf("orders:   act  book courier: refused")
		return errors.New("no courier today")
	}
	o.Shipment = fmt.Sprintf("parcel-%d", o.ID)
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.sql.Q("INSERT INTO shipments (key, parcel) VALUES (?, ?)"), fxsaga.IdempotencyKey(ctx), o.Shipment)
	if err != nil {
		return err
	}
	s.out.printf("orders:   act  book courier: %s", o.Shipment)
	fxcqrs.Emit(ctx, OrderSettled{ID: o.ID})
	return nil
}

// Compensate cancels the booking. Nothing follows this step to fail, but
// recovery can call it should the saga have been compensating when it
// crashed.
func (s *BookCourier) Compensate(ctx context.Context, o *Order) error {
	_, err := fxoutbox.Tx(ctx).ExecContext(ctx, s.sql.Q("DELETE FROM shipments WHERE parcel = ?"), o.Shipment)
	return err
}
