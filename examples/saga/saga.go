package main

import (
	"context"
	"strconv"
	"time"

	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// The saga of the orders service: its context and its definition; the
// steps are in steps.go.

// Order is the saga's context: what the steps know and leave for the next.
type Order struct {
	ID       int    `json:"id"`
	SKU      string `json:"sku"`
	Cents    int    `json:"cents"`
	Payment  string `json:"payment,omitempty"`
	Shipment string `json:"shipment,omitempty"`
}

// Deadline is how long the saga waits for the payment.
type Deadline time.Duration

// NewOrderSaga defines the saga from its steps, which fx makes.
// snippet:saga
func NewOrderSaga(r *ReserveStock, p *RequestPayment, b *BookCourier, within Deadline) *fxsaga.Saga[Order] {
	return fxsaga.Define[Order]("order",
		r,
		fxsaga.Await(fxsaga.Wait[Order, PaymentConfirmed]{
			Name:   "RequestPayment",
			Step:   p,
			Key:    func(o *Order) string { return strconv.Itoa(o.ID) },
			Match:  func(e PaymentConfirmed) string { return strconv.Itoa(e.OrderID) },
			Within: time.Duration(within),
			Then: func(_ context.Context, o *Order, e PaymentConfirmed) error {
				o.Payment = e.Payment
				return nil
			},
		}),
		b,
	).KeyBy(func(o *Order) string { return strconv.Itoa(o.ID) }) // one saga per order at a time, found by it
}

// end snippet
