package fxbus_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/require"
)

// FuzzInbound feeds the inbound path random payloads and metadata. Each
// message is decoded and published (the handler sees exactly the decoded
// event), skipped for a foreign name, or dead-lettered as malformed with a
// reason; it never panics, and nothing else happens.
func FuzzInbound(f *testing.F) {
	f.Add([]byte(`{"id":1,"label":"x"}`), "OrderPlaced", true)
	f.Add([]byte(`{"ID":2}`), "OrderPaid", true)
	f.Add([]byte(`{"ID":"two"}`), "OrderPaid", true)
	f.Add([]byte(`{`), "OrderPlaced", false)
	f.Add([]byte(`null`), "", true)
	f.Add([]byte(``), "InvoiceSent", true)
	f.Add([]byte("\xff\xfe"), "OrderPlaced", true)

	var seen atomic.Int64
	var last atomic.Pointer[any]
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(
		eventFunc[OrderPlaced](func(_ context.Context, e OrderPlaced) error { seen.Add(1); v := any(e); last.Store(&v); return nil }),
		eventFunc[OrderPaid](func(_ context.Context, e OrderPaid) error { seen.Add(1); v := any(e); last.Store(&v); return nil }),
	))
	require.NoError(f, err)
	f.Cleanup(func() { require.NoError(f, m.Stop(context.Background())) })
	b, err := fxbus.New(fxbus.Config{Publisher: failingPublisher{}, Subscriber: noSubscriber{}}, nil, []fxbus.Subscription{
		fxbus.NewSubscription[OrderPlaced]("shared"),
		fxbus.NewSubscription[OrderPaid]("shared"),
	})
	require.NoError(f, err)
	handle := fxbus.HandlerForTest(b, "shared", m)

	f.Fuzz(func(t *testing.T, payload []byte, name string, withName bool) {
		msg := message.NewMessage("fuzz", payload)
		if withName {
			msg.Metadata.Set(fxbus.MetadataName, name)
		}
		before := seen.Load()
		err := handle(msg)
		handled := seen.Load() - before
		known := withName && (name == "OrderPlaced" || name == "OrderPaid")
		switch {
		case err == nil && known:
			require.Equal(t, int64(1), handled, "a decoded message is published once")
			var want any
			if name == "OrderPlaced" {
				var e OrderPlaced
				require.NoError(t, json.Unmarshal(payload, &e))
				want = e
			} else {
				var e OrderPaid
				require.NoError(t, json.Unmarshal(payload, &e))
				want = e
			}
			require.Equal(t, want, *last.Load(), "the handler sees exactly the decoded event")
		case err == nil:
			require.True(t, withName, "a message without a name on a shared topic is malformed")
			require.Zero(t, handled, "a foreign name is skipped")
		default:
			require.True(t, fxbus.IsMalformed(err), "the only error is malformed: %v", err)
			require.NotEmpty(t, err.Error(), "with a reason")
			require.Zero(t, handled)
		}
	})
}

// noSubscriber is a subscriber never subscribed to.
type noSubscriber struct{}

func (noSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return nil, nil
}
func (noSubscriber) Close() error { return nil }
