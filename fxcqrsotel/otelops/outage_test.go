package otelops_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel/otelops"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// natsServer is a NATS server with JetStream of the test's own, which it
// stops and starts again on the same port and store.
type natsServer struct {
	t    *testing.T
	opts *server.Options
	s    *server.Server
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{t: t, opts: &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}}
	n.start()
	n.opts.Port = n.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.stop)
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

type Garbled struct{ N int }

// Through a broker outage: the health check fails while NATS is down and
// passes once it is back; the backlog gauge rises while the rows wait
// and returns to zero when the relay has sent them; a message that cannot
// be decoded is counted as dead-lettered.
func TestThroughAnOutage(t *testing.T) {
	ctx := context.Background()
	ns := startNATS(t)
	addr := ns.s.ClientURL()
	ps, err := natsjs.New(natsjs.Config{
		URL: addr, Group: "orders", AckWait: time.Second,
		Options: []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ps.Close() })
	d := outboxtest.Open(t, fxoutbox.SQLite)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { require.NoError(t, mp.Shutdown(ctx)) })
	var (
		m      *fxcqrs.Mediator
		health *fxcqrs.Health
	)
	app := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxcqrs.HealthModule, otelops.Module,
		fx.Supply(fx.Annotate(mp, fx.As(new(metric.MeterProvider)))),
		fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fx.Supply(d.DB, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
			PollInterval: 20 * time.Millisecond, RetryInitial: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		}}),
		fxbus.Route[Placed]("placed"),
		fxbus.Subscribe[Garbled]("garbled", fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 1, InitialInterval: time.Millisecond})),
		fxcqrs.AsCommandHandler(func() commandFunc[Place] {
			return func(ctx context.Context, _ Place) error {
				fxcqrs.Emit(ctx, Placed{})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Garbled] { return func(context.Context, Garbled) error { return nil } }),
		fx.Populate(&m, &health),
	)
	app.RequireStart()
	defer app.RequireStop()
	backlog := func() float64 {
		return points(t, reader)["fxcqrs.outbox.backlog"][set(otelops.TopicKey.String("placed"))]
	}

	require.NoError(t, fxcqrs.Exec(ctx, m, Place{}))
	require.Eventually(t, func() bool { return backlog() == 0 }, time.Minute, 5*time.Millisecond, "sent")
	require.NoError(t, health.Ready(ctx))

	ns.stop()
	require.Eventually(t, func() bool { return health.Ready(ctx) != nil }, time.Minute, 5*time.Millisecond, "unready while NATS is down")
	assert.ErrorContains(t, health.Ready(ctx), "fxbus.broker")
	assert.NoError(t, health.Live(ctx), "not dead: a restart would not bring the broker back")
	for range 3 {
		require.NoError(t, fxcqrs.Exec(ctx, m, Place{}), "the commit does not need the broker")
	}
	assert.Equal(t, float64(3), backlog(), "the rows wait")

	ns.start()
	require.Eventually(t, func() bool { return backlog() == 0 && health.Ready(ctx) == nil }, time.Minute, 5*time.Millisecond, "sent, and ready again")

	garbled := message.NewMessage("garbled-1", []byte(`{"N": "not a number"`))
	garbled.Metadata.Set(fxbus.MetadataName, "Garbled")
	require.NoError(t, ps.Publish("garbled", garbled))
	dead := set(otelops.OutcomeKey.String("dead_lettered"))
	require.Eventually(t, func() bool { return points(t, reader)["fxcqrs.bus.messages"][dead] == 1 }, time.Minute, 5*time.Millisecond)
	assert.Equal(t, float64(0), points(t, reader)["fxcqrs.bus.messages"][set(otelops.OutcomeKey.String("retried"))], "never retried: it cannot be decoded")
}
