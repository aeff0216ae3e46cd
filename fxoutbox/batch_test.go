package fxoutbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// batcher is a fxbus.BatchPublisher over a GoChannel whose next batches
// can be made to go wrong.
type batcher struct {
	message.Publisher
	mu      sync.Mutex
	batches []int                       // sizes published
	refuse  map[int]int                 // batch number → acknowledge only this many
	during  func(batch int) (err error) // runs inside a batch, before the acks
}

func (b *batcher) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	b.mu.Lock()
	n := len(b.batches)
	b.batches = append(b.batches, len(msgs))
	keep, refused := b.refuse[n]
	during := b.during
	b.mu.Unlock()
	if during != nil {
		if err := during(n); err != nil {
			return 0, err
		}
	}
	if !refused {
		keep = len(msgs)
	}
	if err := b.Publish(topic, msgs[:keep]...); err != nil {
		return 0, err
	}
	if keep < len(msgs) {
		return keep, errors.New("the broker refused one")
	}
	return keep, nil
}

var _ fxbus.BatchPublisher = (*batcher)(nil)

// batchRig is an outbox whose relay publishes through b, not started,
// with n orders written.
func batchRig(t *testing.T, d database, b *batcher, n int) (*fxoutbox.Outbox, <-chan *message.Message) {
	t.Helper()
	// Blocking until acknowledged: the GoChannel delivers in publish order.
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 256, Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	out := received(t, gc, "orders")
	b.Publisher = gc
	bus, err := fxbus.New(fxbus.Config{Publisher: b}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders")}, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
		PollInterval: 10 * time.Millisecond, RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, BatchSize: 10,
	}}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
			return nil
		})))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	for i := range n {
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: i}))
	}
	return o, out
}

// A batch refused at its fourth message: the three before it are
// deleted, the rest sent again in the next batch, and every order
// arrives once, in order.
func TestBatchRefusedInTheMiddle(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		b := &batcher{refuse: map[int]int{0: 3}}
		o, out := batchRig(t, d, b, 10)
		require.NoError(t, o.Start(context.Background()))
		t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })
		for i := range 10 {
			assert.JSONEq(t, fmt.Sprintf(`{"ID":%d}`, i), string(next(t, out).Payload))
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		assert.Equal(t, []int{10, 7}, b.batches[:2], "the refused batch, then the seven from the fourth on")
		assert.Equal(t, uint64(1), o.Stats().PublishFailures)
	})
}

// A relay that lost its lease while its batch was out deletes nothing of
// it: the rows stay for the owner that took the topic over.
func TestFencedDelete(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		stolen := make(chan struct{})
		b := &batcher{}
		b.during = func(batch int) error {
			if batch == 0 {
				_, err := d.DB.Exec(d.Dialect.Rebind("UPDATE fxcqrs_outbox_leases SET owner = ?, until_ns = ?"), "another", time.Now().Add(time.Hour).UnixNano())
				close(stolen)
				return err
			}
			return nil
		}
		o, out := batchRig(t, d, b, 5)
		require.NoError(t, o.Start(context.Background()))
		t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })
		<-stolen
		for range 5 {
			next(t, out) // published once
		}
		require.NoError(t, o.Stop(context.Background()))
		assert.Equal(t, 5, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox"), "nothing deleted by the relay that lost the lease")
		assert.Zero(t, o.Stats().Sent)
	})
}
