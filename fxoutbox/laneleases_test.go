package fxoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus/amqptest"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// The lane leases on each database: a write compares the revision it was
// based on, so that of two replicas writing from one revision one wins
// and the other is told (fxbus.ErrLeaseConflict), even at once; a list
// takes a prefix literally ('_' and '%' are not wildcards).
func TestLaneLeaseStore(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		s, err := fxoutbox.LaneLeaseStore(d.DB, d.Dialect, fxoutbox.Tables{})
		require.NoError(t, err)

		rev, err := s.Put(ctx, "amqp.orders_1.svc.lane.0", []byte(`{"owner":"a"}`), 0)
		require.NoError(t, err)
		_, err = s.Put(ctx, "amqp.orders_1.svc.lane.0", []byte(`{"owner":"b"}`), 0)
		require.ErrorIs(t, err, fxbus.ErrLeaseConflict, "a second insert of the name")
		_, err = s.Put(ctx, "amqp.ordersX1.svc.lane.0", []byte(`{"owner":"c"}`), 0)
		require.NoError(t, err, "another topic's")
		_, err = s.Put(ctx, "amqp.ORDERS_1.svc.lane.0", []byte(`{"owner":"d"}`), 0)
		require.NoError(t, err, "a topic named apart by case alone is another topic (MariaDB: a binary collation)")
		upper, err := s.List(ctx, "amqp.ORDERS_1.")
		require.NoError(t, err)
		require.Len(t, upper, 1, "the prefix compared byte for byte: %v", upper)

		// Two writers from one revision: one wins.
		won, lost := 0, 0
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, owner := range []string{"a", "b"} {
			wg.Go(func() {
				_, err := s.Put(ctx, "amqp.orders_1.svc.lane.0", []byte(`{"owner":"`+owner+`"}`), rev)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case assert.ErrorIs(t, err, fxbus.ErrLeaseConflict):
					lost++
				}
			})
		}
		wg.Wait()
		assert.Equal(t, 1, won, "writers that won")
		assert.Equal(t, 1, lost, "writers told of the conflict")

		all, err := s.List(ctx, "amqp.orders_1.svc.")
		require.NoError(t, err)
		require.Len(t, all, 1, "the prefix taken literally: %v", all)
		e := all["amqp.orders_1.svc.lane.0"]
		assert.Greater(t, e.Rev, rev)
		next, err := s.Put(ctx, "amqp.orders_1.svc.lane.0", []byte(`{"owner":"z"}`), e.Rev)
		require.NoError(t, err)
		assert.Greater(t, next, e.Rev)
		_, err = s.Put(ctx, "amqp.orders_1.svc.lane.0", []byte(`{"owner":"y"}`), e.Rev)
		require.ErrorIs(t, err, fxbus.ErrLeaseConflict, "a write from a revision gone")
		all, err = s.List(ctx, "")
		require.NoError(t, err)
		assert.Len(t, all, 3)
		assert.JSONEq(t, `{"owner":"z"}`, string(all["amqp.orders_1.svc.lane.0"].Value))
		assert.Equal(t, next, all["amqp.orders_1.svc.lane.0"].Rev)
	})
}

// Under fx, amqpbus.Module takes the lane leases fxoutbox.Module provides:
// a service consuming a topic of eight lanes starts with the two modules
// and nothing else, its lanes' leases written to the outbox's database;
// without the outbox's module it fails at start, saying what it lacks.
func TestModuleGivesAMQPTheLaneLeases(t *testing.T) {
	t.Parallel()
	url := env("FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	reachable(t, "FXCQRS_AMQP_URL", hostOf(t, url))
	d := openDatabase(t, fxoutbox.SQLite)
	topic := fmt.Sprintf("lane_leases_%d", rand.Uint32())
	t.Cleanup(func() { require.NoError(t, amqptest.DeleteTopic(url, topic, "billing", 8)) })
	var leases fxbus.LeaseStore
	app := fxtest.New(t,
		fx.Supply(d.DB),
		// snippet:amqpbus-lanes
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(fxoutbox.Config{Dialect: fxoutbox.SQLite}),
		amqpbus.Module(amqpbus.Config{URL: url, Group: "billing", TopicLanes: map[string]int{topic: 8}}),
		// end snippet
		fxbus.Subscribe[Keyed](topic, fxbus.InOrder()),
		fxcqrs.AsEventHandler(func() eventFunc[Keyed] {
			return func(context.Context, Keyed) error { return nil }
		}),
		fx.Populate(&leases),
	)
	app.RequireStart()
	require.Eventually(t, func() bool {
		all, err := leases.List(context.Background(), "")
		return err == nil && len(all) == 9 // the member's lease and the eight lanes'
	}, time.Minute, 10*time.Millisecond, "the replica took its lanes in the outbox's database")
	app.RequireStop()

	err := fx.New(fx.NopLogger,
		fxcqrs.Module, fxbus.Module,
		amqpbus.Module(amqpbus.Config{URL: url, Group: "billing", TopicLanes: map[string]int{topic: 8}}),
		fx.Invoke(func(message.Subscriber) {}),
	).Err()
	require.ErrorContains(t, err, "amqpbus: Config.Leases is required")
}
