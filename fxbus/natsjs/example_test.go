package natsjs_test

import (
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"go.uber.org/fx"
)

// BookingConfirmed is what the example's service publishes.
type BookingConfirmed struct{ Booking string }

// The broker in one line: the billing service's application on NATS
// JetStream, its events routed to a topic and consumed by its own
// durable consumer. (It needs a NATS server to start: fx.New makes the
// connection, and fails with New's error when none answers.)
func ExampleModule() {
	app := fx.New(
		fxcqrs.Module, fxbus.Module,
		natsjs.Module(natsjs.Config{URL: "nats://127.0.0.1:4222", Group: "billing"}),
		fxbus.Route[BookingConfirmed]("bookings_confirmed"),
		fxbus.Subscribe[BookingConfirmed]("bookings_confirmed"),
	)
	_ = app // app.Run() serves until a signal stops it
}
