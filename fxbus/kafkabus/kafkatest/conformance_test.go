package kafkatest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/bustest"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// conformance is kafkabus as the conformance suite opens it, on kfake
// (three brokers): a PubSub per group and replica, its connections
// dialed through a Severable so that the suite can kill it. The suite
// runs its cases side by side with the same group names: each case's
// groups get its name, so that the cases' members do not share groups.
func conformance(t testing.TB, c *kfake.Cluster) bustest.Adapter {
	var severables sync.Map // *kafkabus.PubSub → *bustest.Severable
	return bustest.Adapter{
		Open: func(t testing.TB, group string) (message.Publisher, message.Subscriber) {
			sev := &bustest.Severable{}
			ps, err := kafkabus.New(kafkabus.Config{
				Brokers: c.ListenAddrs(),
				Group:   group + "." + strings.NewReplacer("/", ".", " ", "_").Replace(t.Name()),
				// Short, so that a killed member's partitions move within
				// the suite's deadlines.
				Options:          []kgo.Opt{kgo.Dialer(sev.DialContext), kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(time.Second)},
				RebalanceTimeout: 10 * time.Second,
				Partitions:       4,
			})
			require.NoError(t, err)
			severables.Store(ps, sev)
			t.Cleanup(func() { _ = ps.Close() })
			return ps, ps
		},
		Forget: func(t testing.TB, topics ...string) {
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
			require.NoError(t, err)
			defer cl.Close()
			if _, err := kadm.NewClient(cl).DeleteTopics(context.Background(), topics...); err != nil {
				t.Logf("forget %v: %v", topics, err)
			}
		},
		BadTopic: "payments/confirmed",
		Abandon: func(t testing.TB, _ message.Publisher, sub message.Subscriber) {
			sev, ok := severables.Load(sub)
			require.True(t, ok, "not a PubSub of Open")
			sev.(*bustest.Severable).Sever()
		},
		Unreachable: func(_ testing.TB, addr string) error {
			_, err := kafkabus.New(kafkabus.Config{Brokers: []string{addr}, Group: "a", StartTimeout: 5 * time.Second})
			return err
		},
	}
}

// TestConformance runs the broker conformance suite on kfake.
func TestConformance(t *testing.T) {
	bustest.Run(t, conformance(t, newCluster(t)))
}

// BenchmarkConformance is the suite's InFlight benchmark on kfake (see
// bustest.Bench).
func BenchmarkConformance(b *testing.B) { bustest.Bench(b, conformance(b, newCluster(b))) }
