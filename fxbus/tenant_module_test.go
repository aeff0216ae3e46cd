package fxbus_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"go.uber.org/fx"
)

// fxbus.Module takes the Tenants the graph provides: a message of a
// known tenant is handled under it, where without them it would be
// dead-lettered.
func TestModuleTakesTenants(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "orders")
	seen := newInbox[string]()
	m := service(t, gc, gc,
		fx.Supply(fx.Annotate(fxbus.StaticTenants("acme"), fx.As(new(fxbus.Tenants)))),
		fxbus.Route[OrderPlaced](tp),
		fxbus.Subscribe[OrderPlaced](tp),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(ctx context.Context, _ OrderPlaced) error {
				if fxbus.MessageID(ctx) != "" { // the subscription's handling
					seen.add(fxbus.TenantOf(ctx))
				}
				return nil
			}
		}),
	)
	assert.NoError(t, fxcqrs.Exec(fxbus.WithTenant(context.Background(), "acme"), m, PlaceOrder{ID: 1}))
	assert.Equal(t, []string{"acme"}, seen.wait(t, 1))
}
