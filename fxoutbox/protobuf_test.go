package fxoutbox_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/protobuf"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type Label struct{ Text string }

// A protobuf route end to end: written to the outbox in the handler's
// transaction, relayed to the broker as protobuf, dead-lettered by its
// subscription while its handler fails (the payload kept as it was),
// replayed through the outbox, and handled once, by its inbox, decoded
// as protobuf.
func TestProtobufThroughOutboxInboxDeadLetterAndReplay(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	var (
		o       *fxoutbox.Outbox
		m       *fxcqrs.Mediator
		fixed   atomic.Bool
		handled = make(chan string, 4)
	)
	pb := fxbus.Marshal(protobuf.Marshaler{})
	app := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite, Inbox: true, Relay: fxoutbox.RelayConfig{PollInterval: 10 * time.Millisecond}}),
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fxbus.Route[*wrapperspb.StringValue]("labels", pb),
		fxbus.Subscribe[*wrapperspb.StringValue]("labels", pb,
			fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 1, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond})),
		fxcqrs.AsCommandHandler(func() commandFunc[Label] {
			return func(ctx context.Context, c Label) error {
				fxcqrs.Emit(ctx, wrapperspb.String(c.Text))
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[*wrapperspb.StringValue] {
			return func(ctx context.Context, e *wrapperspb.StringValue) error {
				if fxbus.MessageID(ctx) == "" {
					return nil // the emitting call's own delivery, not the subscription's
				}
				if !fixed.Load() {
					return errors.New("the printer is down")
				}
				handled <- fxbus.MessageID(ctx) + " " + e.GetValue()
				return nil
			}
		}),
		fx.Populate(&o, &m),
	)
	app.RequireStart()
	defer app.RequireStop()
	raw, err := gc.Subscribe(context.Background(), "labels")
	require.NoError(t, err)

	require.NoError(t, fxcqrs.Exec(context.Background(), m, Label{Text: "fragile"}))
	var onWire *message.Message
	select {
	case onWire = <-raw:
		onWire.Ack()
	case <-time.After(time.Minute):
		t.Fatal("the relay published nothing")
	}
	assert.Equal(t, protobuf.ContentType, onWire.Metadata.Get(fxbus.MetadataContentType))
	var sent wrapperspb.StringValue
	require.NoError(t, proto.Unmarshal(onWire.Payload, &sent), "the payload is protobuf's wire format")
	assert.Equal(t, "fragile", sent.GetValue())

	var letters []fxoutbox.DeadLetter
	waitFor(t, func() bool {
		letters, err = o.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: "labels"})
		require.NoError(t, err)
		return len(letters) == 1
	})
	l := letters[0]
	assert.Equal(t, onWire.UUID, l.MessageID)
	assert.Contains(t, l.Error, "the printer is down")
	shown, err := protobuf.Decode(l.Name, l.Payload)
	require.NoError(t, err)
	assert.JSONEq(t, `"fragile"`, string(shown), "the stored payload decodes by its event's name")

	fixed.Store(true)
	n, err := o.Admin().Replay(context.Background(), []int64{l.ID}, "ops", "the printer is back")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	select {
	case got := <-handled:
		assert.Equal(t, onWire.UUID+" fragile", got, "handled with its own id, decoded as protobuf")
	case <-time.After(time.Minute):
		t.Fatal("the replayed message was never handled")
	}
}
