package fxoutbox_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/nats-io/nats-server/v2/server"
	nc "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// natsServer runs a NATS server with JetStream of the test's own, on
// loopback, keeping its store across restarts.
type natsServer struct {
	t     testing.TB
	opts  *server.Options
	s     *server.Server
	store string
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	n := &natsServer{t: t, store: t.TempDir()}
	n.opts = &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: n.store, NoSigs: true, NoLog: true}
	n.start()
	// Restarts keep the port the clients know.
	n.opts.Port = n.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { n.s.Shutdown(); n.s.WaitForShutdown() })
	return n
}

func (n *natsServer) start() {
	s, err := server.NewServer(n.opts)
	require.NoError(n.t, err)
	go s.Start()
	require.True(n.t, s.ReadyForConnections(10*time.Second), "the test's NATS server did not start")
	n.s = s
}

func (n *natsServer) stop() {
	n.s.Shutdown()
	n.s.WaitForShutdown()
}

// A broker that is down for a while: commits go on, their rows wait in
// the outbox, nothing is dead-lettered or lost, and delivery resumes when
// the broker is back.
func TestBrokerOutage(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.PostgreSQL)
	ns := startNATS(t)
	addr := ns.s.ClientURL()
	const topic = "outage"
	provisionNATS(t, addr, topic)

	reconnect := []nc.Option{nc.MaxReconnects(-1), nc.ReconnectWait(50 * time.Millisecond), nc.RetryOnFailedConnect(true)}
	pub, err := wnats.NewPublisher(wnats.PublisherConfig{URL: addr, NatsOptions: reconnect, Marshaler: &wnats.NATSMarshaler{}}, watermill.NopLogger{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
		URL: addr, NatsOptions: reconnect, QueueGroupPrefix: "billing", SubscribersCount: 1,
		AckWaitTimeout: 5 * time.Second, CloseTimeout: 5 * time.Second, Unmarshaler: &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{DurablePrefix: "billing", SubscribeOptions: []nc.SubOpt{nc.AckExplicit(), nc.ManualAck()}},
	}, watermill.NopLogger{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })

	var (
		mu  sync.Mutex
		got = map[int]int{}
	)
	b, err := fxbus.New(fxbus.Config{Publisher: pub, Subscriber: sub},
		[]fxbus.Routing{fxbus.NewRoute[OrderPlaced](topic)}, []fxbus.Subscription{fxbus.NewSubscription[OrderPlaced](topic)})
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
		PollInterval: 20 * time.Millisecond, RetryInitial: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			fxcqrs.Emit(ctx, OrderPlaced(c))
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
			if fxbus.MessageID(ctx) != "" { // the inbound copy, not the local one
				mu.Lock()
				got[e.ID]++
				mu.Unlock()
			}
			return nil
		})),
	)
	require.NoError(t, err)
	require.NoError(t, o.Start(context.Background()))
	require.NoError(t, b.Start(context.Background(), m))
	t.Cleanup(func() {
		_ = b.Stop(context.Background())
		_ = m.Stop(context.Background())
		_ = o.Stop(context.Background())
	})
	delivered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}

	for id := 1; id <= 10; id++ {
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: id}))
	}
	waitFor(t, func() bool { return delivered() == 10 })

	ns.stop()
	for id := 11; id <= 20; id++ {
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: id}), "the commit does not need the broker")
	}
	// The relay deletes what it published once per window
	// (RelayConfig.ProgressInterval), broker or not: the first ten go,
	// the rows of the outage wait.
	waitFor(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 10 })

	ns.start()
	waitFor(t, func() bool { return delivered() == 20 })
	// A message can reach the consumer before the relay has deleted its
	// row (the delete follows the broker's acknowledgement): wait for it.
	waitFor(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 })
	assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"), "an outage dead-letters nothing")
}
