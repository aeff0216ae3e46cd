package fxbus_test

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// A route that writes CloudEvents: on a publisher without a binding of
// its own, Kafka's header names; natsjs writes "ce-" headers, amqpbus
// "cloudEvents:" ones.
func ExampleCloudEvents() {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer gc.Close()

	route := fxbus.NewRoute[OrderPlaced]("orders",
		fxbus.KeyBy(func(e OrderPlaced) string { return strconv.Itoa(e.ID) }),
		fxbus.CloudEvents(fxbus.CloudEventsConfig{
			Source:  "/shop/orders",
			Subject: func(e any) string { return e.(OrderPlaced).Label },
		}))
	bus, err := fxbus.New(fxbus.Config{Publisher: gc}, []fxbus.Routing{route}, nil)
	if err != nil {
		panic(err)
	}
	out, _ := bus.Messages(context.Background(), []any{OrderPlaced{ID: 7, Label: "books"}})
	msg := out[0].Message
	for _, k := range []string{"ce_specversion", "ce_source", "ce_type", "ce_subject", "ce_partitionkey", "content-type"} {
		fmt.Printf("%s: %s\n", k, msg.Metadata.Get(k))
	}
	fmt.Println("ce_id is the message id:", msg.Metadata.Get("ce_id") == msg.UUID)
	fmt.Println(string(msg.Payload))
	// Output:
	// ce_specversion: 1.0
	// ce_source: /shop/orders
	// ce_type: OrderPlaced.v1
	// ce_subject: books
	// ce_partitionkey: 7
	// content-type: application/json
	// ce_id is the message id: true
	// {"id":7,"label":"books"}
}
