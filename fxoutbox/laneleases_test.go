package fxoutbox_test

import (
	"context"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		assert.Len(t, all, 2)
		assert.JSONEq(t, `{"owner":"z"}`, string(all["amqp.orders_1.svc.lane.0"].Value))
		assert.Equal(t, next, all["amqp.orders_1.svc.lane.0"].Rev)
	})
}
