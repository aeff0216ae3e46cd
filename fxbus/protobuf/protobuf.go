// Package protobuf is a fxbus.Marshaler of protocol buffers
// (google.golang.org/protobuf), for a route or a subscription that asks
// for it with fxbus.Marshal while the rest of the bus stays JSON:
//
//	fxbus.Route[*shoppb.OrderPlaced]("orders", fxbus.Marshal(protobuf.Marshaler{}))
//	fxbus.Subscribe[*shoppb.OrderPlaced]("orders", fxbus.Marshal(protobuf.Marshaler{}))
//
// The event type is the generated message's pointer type. The payload is
// the message's binary wire format; its content type, in the
// fxbus.MetadataContentType metadata, is "application/protobuf", by which
// a subscription picks this Marshaler and the repair tools decode the
// payloads they show (see [Decode]).
package protobuf

import (
	"errors"
	"fmt"
	"reflect"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// ContentType is the media type of a protobuf payload.
const ContentType = "application/protobuf"

// Marshaler encodes proto.Message events in the protobuf wire format.
type Marshaler struct{}

// ContentType returns "application/protobuf".
func (Marshaler) ContentType() string { return ContentType }

// Marshal encodes event, a proto.Message.
func (Marshaler) Marshal(event any) ([]byte, error) {
	m, ok := event.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("protobuf.Marshal: %T is not a proto.Message: route the generated message's pointer type", event)
	}
	return proto.Marshal(m)
}

// Unmarshal decodes data into into: a pointer to a generated message's
// pointer (what a subscription of *pb.Msg gives), or a proto.Message.
func (Marshaler) Unmarshal(data []byte, into any) error {
	if m, ok := into.(proto.Message); ok {
		return proto.Unmarshal(data, m)
	}
	v := reflect.ValueOf(into)
	if v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Pointer {
		if _, ok := v.Elem().Interface().(proto.Message); ok {
			if v.Elem().IsNil() {
				v.Elem().Set(reflect.New(v.Elem().Type().Elem()))
			}
			return proto.Unmarshal(data, v.Elem().Interface().(proto.Message))
		}
	}
	return fmt.Errorf("protobuf.Unmarshal: %T does not point to a proto.Message: subscribe to the generated message's pointer type", into)
}

// ErrUnknownType is returned (wrapped) by Decode when no registered
// message type has the event's name.
var ErrUnknownType = errors.New("no registered protobuf message type of that name")

// Decode renders a protobuf payload as JSON (protojson), for people to
// read: the message type is the one, among those the program registered
// (every generated package registers its types when it is linked in),
// whose full name is name or ends with "."+name (an event's name on the
// wire is its Go type's bare name unless fxbus.Name says otherwise), for
// the repair tools to show a stored payload.
func Decode(name string, payload []byte) ([]byte, error) {
	mt, err := find(name)
	if err != nil {
		return nil, err
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("protobuf.Decode %s: %w", mt.Descriptor().FullName(), err)
	}
	return protojson.Marshal(m)
}

func find(name string) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name)); err == nil {
		return mt, nil
	}
	var found []protoreflect.MessageType
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if string(mt.Descriptor().Name()) == name {
			found = append(found, mt)
		}
		return true
	})
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("protobuf.Decode %q: %w", name, ErrUnknownType)
	}
	return nil, fmt.Errorf("protobuf.Decode %q: %d registered message types have that name: name the event with its full name (fxbus.Name)", name, len(found))
}
