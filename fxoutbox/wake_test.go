package fxoutbox_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A unit of work that wrote no outbox row wakes no relay: only a commit
// with rows to send does, nested calls' rows included.
func TestOnlyWorkWakesTheRelay(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	bus, err := fxbus.New(fxbus.Config{Publisher: gc}, []fxbus.Routing{fxbus.NewRoute[OrderPlaced]("orders")}, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(t, err)
	var wakes atomic.Int32
	fxoutbox.SetWake(o, func() { wakes.Add(1) })
	var m *fxcqrs.Mediator
	m, err = fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()),
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
			switch c.ID {
			case 1: // routed
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
			case 2: // a nested call's routed event joins the outer unit of work
				return fxcqrs.Exec(ctx, m, PlaceOrder{ID: 1})
			}
			return nil
		})))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })

	for range 3 {
		require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 0}))
	}
	assert.Zero(t, wakes.Load(), "nothing written, nothing woken")
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	assert.Equal(t, int32(1), wakes.Load())
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 2}))
	assert.Equal(t, int32(2), wakes.Load(), "the outer commit wakes for the nested call's row")
}
