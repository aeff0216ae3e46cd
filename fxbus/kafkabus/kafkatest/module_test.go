package kafkatest

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/fx"
)

type (
	Shipped     struct{ Order int }
	ShipOrder   struct{ Order int }
	eventFunc   func(context.Context, Shipped) error
	commandFunc func(context.Context, ShipOrder) error
)

func (f eventFunc) Handle(ctx context.Context, e Shipped) error     { return f(ctx, e) }
func (f commandFunc) Handle(ctx context.Context, c ShipOrder) error { return f(ctx, c) }

// The preset's module is Kafka in one line: a routed event goes through
// kfake to the application's own subscription; a record that cannot be
// decoded (written by another producer, without an id) is dead-lettered
// and its offset passed; the PubSub closes with the application.
func TestModuleThroughTheBus(t *testing.T) {
	c := newCluster(t)
	group, topic := name(t, "g"), name(t, "shipped")
	dead := topic + ".dead"
	admin := newPubSub(t, c, group+".dead")
	require.NoError(t, admin.Provision(t.Context(), topic, dead)) // before the bus's own provisioning

	var (
		handled atomic.Int32
		m       *fxcqrs.Mediator
		pub     message.Publisher
	)
	app := fx.New(fx.NopLogger,
		fxcqrs.Module, fxbus.Module,
		kafkabus.Module(kafkabus.Config{Brokers: c.ListenAddrs(), Group: group, Partitions: 8}),
		fxbus.Route[Shipped](topic, fxbus.KeyBy(func(e Shipped) string { return "order" })),
		fxbus.Subscribe[Shipped](topic, fxbus.DeadLetter(dead)),
		fxcqrs.AsCommandHandler(func() commandFunc {
			return func(ctx context.Context, c ShipOrder) error {
				fxcqrs.Emit(ctx, Shipped(c))
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc {
			return func(ctx context.Context, _ Shipped) error {
				if fxbus.MessageID(ctx) != "" {
					handled.Add(1)
				}
				return nil
			}
		}),
		fx.Populate(&m, &pub),
	)
	require.NoError(t, app.Err())
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, app.Start(ctx))

	raw, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer raw.Close()
	garbage := &kgo.Record{Topic: topic, Key: []byte("order"), Value: []byte("{not json")}
	require.NoError(t, raw.ProduceSync(ctx, garbage).FirstErr())
	require.NoError(t, fxcqrs.Exec(ctx, m, ShipOrder{Order: 1}))

	deadCh, err := admin.Subscribe(ctx, dead)
	require.NoError(t, err)
	d := receive(t, deadCh, 1)[0]
	d.Ack()
	assert.Equal(t, "{not json", string(d.Payload))
	eventually(t, "the routed event handled", func() bool { return handled.Load() == 1 })
	p := partitionOf("order", 8)
	eventually(t, "both offsets of the key's partition committed", func() bool { return committed(c, group, topic, p) == 2 })

	require.NoError(t, app.Stop(ctx))
	assert.Error(t, pub.Publish(topic, message.NewMessage("after-stop", []byte(`{}`))), "closed with the application")
}
