package fxoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// leased is a subscriber that says of each message that it came from
// lane 0 under a lease that held tells about: what an adapter sharing
// lanes among replicas (natsjs with Lanes) does.
type leased struct {
	*fxbus.Embedded
	held *atomic.Bool
}

func (l leased) SubscribeFlow(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	in, err := l.Embedded.SubscribeFlow(ctx, topic, flow)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for m := range in {
			m.SetContext(fxbus.WithLaneLease(m.Context(), fxbus.LaneLease{Lane: 0, Epoch: 1, Held: l.held.Load}))
			out <- m
		}
	}()
	return out, nil
}

// Fenced is the inbox's answer to a replica that stalled past its lane's
// lease: the handler ran, and neither its effect nor its inbox record
// commits; the message is given back, not retried into a dead letter;
// once the lease holds again, it is handled, once.
func TestTheInboxIsFencedByTheLanesLease(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	_, err := d.DB.Exec("CREATE TABLE effects (id TEXT NOT NULL)")
	require.NoError(t, err)
	held := new(atomic.Bool)
	broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
	t.Cleanup(func() { require.NoError(t, broker.Close()) })
	tp := fmt.Sprintf("fenced_%d", rand.Uint64())
	b, err := fxbus.New(fxbus.Config{Publisher: broker, Subscriber: leased{broker, held}},
		nil, []fxbus.Subscription{fxbus.NewSubscription[OrderPlaced](tp, fxbus.InOrder())})
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: fxoutbox.SQLite, Inbox: true}, nil)
	require.NoError(t, err)
	var runs atomic.Int64
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(ctx context.Context, e OrderPlaced) error {
			runs.Add(1)
			_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO effects (id) VALUES (?)", e.ID)
			return err
		})),
		fxcqrs.WithMiddleware(o.UnitOfWork()))
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background(), m))
	t.Cleanup(func() {
		require.NoError(t, b.Stop(context.Background()))
		require.NoError(t, m.Stop(context.Background()))
	})

	msg := message.NewMessage("m-1", []byte(`{"ID":1}`))
	msg.Metadata.Set(fxbus.MetadataName, b.NameOf(reflect.TypeFor[OrderPlaced]()))
	msg.Metadata.Set(fxbus.MetadataKey, "o-1")
	require.NoError(t, broker.Publish(tp, msg))
	waitFor(t, func() bool { return runs.Load() >= 3 }) // handled, fenced, given back, again
	var n int
	require.NoError(t, d.DB.QueryRow("SELECT count(*) FROM effects").Scan(&n))
	assert.Zero(t, n, "no effect commits while the lease does not hold")
	assert.Zero(t, b.Stats().DeadLettered, "a fenced message is not dead-lettered")

	held.Store(true)
	waitFor(t, func() bool {
		_ = d.DB.QueryRow("SELECT count(*) FROM effects").Scan(&n)
		return n == 1
	})
	assert.Equal(t, 1, n)
}
