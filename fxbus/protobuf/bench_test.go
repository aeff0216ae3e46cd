package protobuf_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/protobuf"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// FieldJSON is descriptorpb.FieldDescriptorProto's twin in JSON: the
// same fields, so that the two formats carry one event.
type FieldJSON struct {
	Name     string `json:"name"`
	Number   int32  `json:"number"`
	Label    int32  `json:"label"`
	Type     int32  `json:"type"`
	TypeName string `json:"typeName"`
	JSONName string `json:"jsonName"`
}

// BenchmarkRouted is what a routed event costs in each format: made into
// its message (Bus.Messages: encoded, named, ids) and decoded again as
// its subscription does. Compare with benchstat -col /format.
func BenchmarkRouted(b *testing.B) {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer gc.Close()
	pb := &descriptorpb.FieldDescriptorProto{
		Name: proto.String("customer_id"), Number: proto.Int32(7),
		Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		Type:     descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(),
		TypeName: proto.String(".shop.v1.CustomerId"), JsonName: proto.String("customerId"),
	}
	js := FieldJSON{Name: "customer_id", Number: 7, Label: 1, Type: 11, TypeName: ".shop.v1.CustomerId", JSONName: "customerId"}
	run := func(b *testing.B, r fxbus.Routing, ev any, decode func([]byte) error) {
		bus, err := fxbus.New(fxbus.Config{Publisher: gc}, []fxbus.Routing{r}, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		events := []any{ev}
		b.ReportAllocs()
		for b.Loop() {
			out, fails := bus.Messages(ctx, events)
			if len(fails) > 0 {
				b.Fatal(fails)
			}
			if err := decode(out[0].Message.Payload); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("format=json", func(b *testing.B) {
		run(b, fxbus.NewRoute[FieldJSON]("bench"), js, func(p []byte) error {
			var e FieldJSON
			return fxbus.JSON{}.Unmarshal(p, &e)
		})
	})
	b.Run("format=protobuf", func(b *testing.B) {
		run(b, fxbus.NewRoute[*descriptorpb.FieldDescriptorProto]("bench", fxbus.Marshal(protobuf.Marshaler{})), pb, func(p []byte) error {
			var e *descriptorpb.FieldDescriptorProto
			return protobuf.Marshaler{}.Unmarshal(p, &e)
		})
	})
}
