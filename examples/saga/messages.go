package main

// What the two services say to each other, and where.

// The messages between the services, as both know them.
type (
	// PaymentRequested leaves orders for payments.
	PaymentRequested struct {
		OrderID int `json:"orderId"`
		Cents   int `json:"cents"`
	}
	// PaymentConfirmed leaves payments for orders: it resumes the saga.
	PaymentConfirmed struct {
		OrderID int    `json:"orderId"`
		Payment string `json:"payment"`
	}
	// RefundRequested leaves orders for payments when a paid order is
	// compensated.
	RefundRequested struct {
		Payment string `json:"payment"`
	}
	// OrderSettled is the orders service's own event when the saga ends,
	// either way.
	OrderSettled struct{ ID int }
)

// topics are where the services meet (natsjs names a stream after its
// topic, so no dots); a test gives them a prefix of its own.
var topics = struct{ requests, refunds, confirmed string }{"payment_requests", "payment_refunds", "payments_confirmed"}
