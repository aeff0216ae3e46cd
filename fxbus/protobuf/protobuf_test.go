package protobuf_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/protobuf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type Place struct{ Label string }

type placeHandler struct{}

func (placeHandler) Handle(ctx context.Context, p Place) error {
	fxcqrs.Emit(ctx, wrapperspb.String(p.Label))
	fxcqrs.Emit(ctx, Audited{Label: p.Label})
	return nil
}

type Audited struct {
	Label string `json:"label"`
}

type handler[E any] struct{ got chan E }

func (h handler[E]) Handle(_ context.Context, e E) error {
	h.got <- e
	return nil
}

func start(t *testing.T, opts ...fx.Option) (*fxcqrs.Mediator, *gochannel.GoChannel) {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 64}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	var m *fxcqrs.Mediator
	app := fxtest.New(t, append([]fx.Option{
		fx.NopLogger, fxcqrs.Module, fxbus.Module, fx.Populate(&m),
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)))),
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Subscriber)))),
	}, opts...)...)
	app.RequireStart()
	t.Cleanup(app.RequireStop)
	return m, gc
}

// A route chooses protobuf while the bus stays JSON; its subscription
// decodes it, the payload is the wire format and the content type says
// so.
func TestRouteAndSubscriptionChooseProtobuf(t *testing.T) {
	t.Parallel()
	// Room for both handlings of each: the subscription's can come before
	// Exec's own, which would otherwise block Exec on a full channel.
	strs, audit := make(chan *wrapperspb.StringValue, 2), make(chan Audited, 2)
	m, gc := start(t,
		fxbus.Route[*wrapperspb.StringValue]("pb_strings", fxbus.Marshal(protobuf.Marshaler{})),
		fxbus.Route[Audited]("pb_audit"),
		fxbus.Route[*wrapperspb.StringValue]("pb_strings_json"), // the same event, JSON on another route
		fxbus.Subscribe[*wrapperspb.StringValue]("pb_strings", fxbus.Marshal(protobuf.Marshaler{})),
		fxbus.Subscribe[Audited]("pb_audit"),
		fxcqrs.AsCommandHandler(func() placeHandler { return placeHandler{} }),
		fxcqrs.AsEventHandler(func() handler[*wrapperspb.StringValue] { return handler[*wrapperspb.StringValue]{strs} }),
		fxcqrs.AsEventHandler(func() handler[Audited] { return handler[Audited]{audit} }),
	)
	raw, err := gc.Subscribe(context.Background(), "pb_strings_json")
	require.NoError(t, err)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, Place{Label: "pb"}))
	// Each handler ran once in-process; the subscriptions bring one more.
	for range 2 {
		assert.Equal(t, "pb", (<-strs).GetValue())
		assert.Equal(t, "pb", (<-audit).Label)
	}
	msg := <-raw
	msg.Ack()
	assert.Equal(t, "application/json", msg.Metadata.Get(fxbus.MetadataContentType), "each route its own Marshaler")
	assert.JSONEq(t, `{"value":"pb"}`, string(msg.Payload))
}

// A subscription picks the decoder by the message's content type: a JSON
// message reaches a protobuf subscription decoded as JSON, a protobuf one
// as protobuf.
func TestSubscriptionDecodesByContentType(t *testing.T) {
	t.Parallel()
	strs := make(chan *wrapperspb.StringValue, 2)
	_, gc := start(t,
		fxbus.Subscribe[*wrapperspb.StringValue]("pb_mixed", fxbus.Marshal(protobuf.Marshaler{})),
		fxcqrs.AsEventHandler(func() handler[*wrapperspb.StringValue] { return handler[*wrapperspb.StringValue]{strs} }),
	)
	asJSON := message.NewMessage(watermill.NewUUID(), []byte(`{"value":"json"}`))
	asJSON.Metadata.Set(fxbus.MetadataContentType, "application/json; charset=utf-8")
	payload, err := proto.Marshal(wrapperspb.String("proto"))
	require.NoError(t, err)
	asProto := message.NewMessage(watermill.NewUUID(), payload)
	asProto.Metadata.Set(fxbus.MetadataContentType, protobuf.ContentType)
	require.NoError(t, gc.Publish("pb_mixed", asJSON, asProto))
	got := map[string]bool{}
	for range 2 {
		select {
		case s := <-strs:
			got[s.GetValue()] = true
		case <-time.After(30 * time.Second):
			t.Fatal("not handled")
		}
	}
	assert.Equal(t, map[string]bool{"json": true, "proto": true}, got)
}

func TestMarshalerErrors(t *testing.T) {
	t.Parallel()
	_, err := protobuf.Marshaler{}.Marshal(Audited{})
	require.ErrorContains(t, err, "protobuf.Marshal: protobuf_test.Audited is not a proto.Message")
	var a Audited
	require.ErrorContains(t, protobuf.Marshaler{}.Unmarshal(nil, &a), "protobuf.Unmarshal: *protobuf_test.Audited does not point to a proto.Message")
	var s *wrapperspb.StringValue
	payload, _ := proto.Marshal(wrapperspb.String("x"))
	require.NoError(t, protobuf.Marshaler{}.Unmarshal(payload, &s))
	assert.Equal(t, "x", s.GetValue())
}

// Decode shows a payload as JSON by the event's name: full, or bare when
// one registered type has it.
func TestDecode(t *testing.T) {
	t.Parallel()
	payload, err := proto.Marshal(wrapperspb.String("shown"))
	require.NoError(t, err)
	for _, name := range []string{"google.protobuf.StringValue", "StringValue"} {
		out, err := protobuf.Decode(name, payload)
		require.NoError(t, err)
		var v string
		require.NoError(t, json.Unmarshal(out, &v))
		assert.Equal(t, "shown", v)
	}
	_, err = protobuf.Decode("NoSuchType", payload)
	require.ErrorIs(t, err, protobuf.ErrUnknownType)
}

// Show decodes a registered protobuf payload, and shows other bytes as a
// hex dump and text as text.
func TestShow(t *testing.T) {
	t.Parallel()
	payload, err := proto.Marshal(wrapperspb.Int64(-1))
	require.NoError(t, err)
	text, decoded := protobuf.Show("Int64Value", protobuf.ContentType, payload)
	assert.True(t, decoded)
	assert.Equal(t, `"-1"`, text)

	text, decoded = protobuf.Show("NoSuchType", protobuf.ContentType, payload)
	assert.False(t, decoded)
	assert.Contains(t, text, "00000000  08 ff ff ff ff ff ff ff  ff ff 01", "an unknown type's bytes as hex")

	text, _ = protobuf.Show("OrderPlaced", "application/json", []byte(`{"id":1}`))
	assert.Equal(t, `{"id":1}`, text)
}
