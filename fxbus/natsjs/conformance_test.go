package natsjs_test

import (
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/bustest"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// conformance is natsjs as the conformance suite opens it: a PubSub per
// group and replica, its connections dialed through a Severable so that
// the suite can kill it.
func conformance(t testing.TB) bustest.Adapter {
	addr := brokertest.Address(t, "FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	var severables sync.Map // *natsjs.PubSub → *bustest.Severable
	return bustest.Adapter{
		Open: func(t testing.TB, group string) (message.Publisher, message.Subscriber) {
			sev := &bustest.Severable{}
			ps, err := natsjs.New(natsjs.Config{
				URL: addr, Group: group,
				// Short, so that what a killed consumer held comes back
				// within the suite's deadlines.
				AckWait: 3 * time.Second,
				Options: []nats.Option{nats.SetCustomDialer(sev)},
			})
			require.NoError(t, err)
			severables.Store(ps, sev)
			t.Cleanup(func() { _ = ps.Close() })
			return ps, ps
		},
		Forget: func(t testing.TB, topics ...string) {
			conn, err := nats.Connect(addr)
			if err != nil {
				t.Logf("forget %v: %v", topics, err)
				return
			}
			defer conn.Close()
			js, err := conn.JetStream()
			if err != nil {
				return
			}
			for _, tp := range topics {
				_ = js.DeleteStream(natsjs.StreamName(tp))
			}
		},
		Abandon: func(t testing.TB, _ message.Publisher, sub message.Subscriber) {
			sev, ok := severables.Load(sub)
			require.True(t, ok, "not a PubSub of Open")
			sev.(*bustest.Severable).Sever()
		},
		Unreachable: func(_ testing.TB, addr string) error {
			_, err := natsjs.New(natsjs.Config{URL: "nats://" + addr, Group: "a"})
			return err
		},
		BadTopic: "payments confirmed", // a dot is fine: the stream's name has _ there
	}
}

// TestConformance runs the broker conformance suite on NATS JetStream.
func TestConformance(t *testing.T) {
	t.Parallel()
	bustest.Run(t, conformance(t))
}

// BenchmarkConformance is the suite's InFlight benchmark on NATS
// JetStream (see bustest.Bench).
func BenchmarkConformance(b *testing.B) { bustest.Bench(b, conformance(b)) }
