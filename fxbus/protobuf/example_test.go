package protobuf_test

import (
	"fmt"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/protobuf"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// One route and its subscription in protobuf, the rest of the bus in JSON;
// a stored payload shown by its event's name.
func Example() {
	_ = []any{
		fxbus.Route[*wrapperspb.StringValue]("labels", fxbus.Marshal(protobuf.Marshaler{})),
		fxbus.Subscribe[*wrapperspb.StringValue]("labels", fxbus.Marshal(protobuf.Marshaler{})),
	}

	payload, _ := proto.Marshal(wrapperspb.String("books"))
	shown, err := protobuf.Decode("StringValue", payload)
	fmt.Println(string(shown), err)
	// Output: "books" <nil>
}
