package fxbus_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// Version 1 of an event, as a service not yet upgraded still publishes it.
type customerRegisteredV1 struct {
	Name string `json:"name"`
}

type registerV1 struct{ Name string }

type registerV1Handler struct{}

func (registerV1Handler) Handle(ctx context.Context, c registerV1) error {
	fxcqrs.Emit(ctx, customerRegisteredV1(c))
	return nil
}

// snippet:version-type

// CustomerRegistered is version 2 of the event "CustomerRegistered":
// version 1 had one "name".
type CustomerRegistered struct {
	First string `json:"first"`
	Last  string `json:"last"`
}

// end snippet

type onRegistered func(context.Context, CustomerRegistered) error

func (f onRegistered) Handle(ctx context.Context, e CustomerRegistered) error { return f(ctx, e) }

// A consumer of version 2 reads the version 1 messages an older producer
// still sends: its upcaster splits the name before the message is
// decoded.
func ExampleUpcastJSON() {
	got := make(chan CustomerRegistered, 1)
	_, stopConsumer := startExample(
		// snippet:upcaster
		fxbus.Subscribe[CustomerRegistered]("example-customers", fxbus.Version(2)),
		fxbus.AsUpcaster(fxbus.UpcastJSON("CustomerRegistered", 1, func(o map[string]any) error {
			name, _ := o["name"].(string)
			first, last, _ := strings.Cut(name, " ")
			o["first"], o["last"] = first, last
			delete(o, "name")
			return nil
		})),
		// end snippet
		fxcqrs.AsEventHandler(func() onRegistered {
			return func(_ context.Context, e CustomerRegistered) error { got <- e; return nil }
		}),
	)
	defer stopConsumer()
	producer, stopProducer := startExample(
		fxbus.Route[customerRegisteredV1]("example-customers", fxbus.Name("CustomerRegistered")), // version 1: no fxbus.Version
		fxcqrs.AsCommandHandler(func() registerV1Handler { return registerV1Handler{} }),
	)
	defer stopProducer()
	if err := fxcqrs.Exec(context.Background(), producer, registerV1{Name: "Ada Lovelace"}); err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", <-got)
	// Output: {First:Ada Last:Lovelace}
}
