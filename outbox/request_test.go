package fxoutbox_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Lookup is a request.
type Lookup struct{ ID int }

type requestFunc[Q, R any] func(context.Context, Q) (R, error)

func (f requestFunc[Q, R]) Handle(ctx context.Context, q Q) (R, error) { return f(ctx, q) }

// A request's routed event goes through the outbox, written in a
// transaction of its own after the handler returns (the handler has
// none): with the outbox the mediator has no Forwarder, and it was lost.
func TestRequestRoutedEvent(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	var inTx bool
	r := newRig(t, d, fxoutbox.Config{}, fxcqrs.WithRequestHandlers(requestFunc[Lookup, int](func(ctx context.Context, q Lookup) (int, error) {
		inTx = fxoutbox.Tx(ctx) != nil
		fxcqrs.Emit(ctx, OrderPlaced{ID: q.ID})
		return 1, nil
	})))
	out := received(t, r.gc, "orders")
	_, err := fxcqrs.Send[int](context.Background(), r.m, Lookup{ID: 4})
	require.NoError(t, err)
	assert.False(t, inTx, "a request has no transaction without Config.Requests")
	assert.JSONEq(t, `{"ID":4}`, string(next(t, out).Payload))
}
