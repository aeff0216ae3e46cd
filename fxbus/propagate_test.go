package fxbus_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
)

type tenantKey struct{}

// tenants carries a customer id across hops, as a user's Propagator would
// (under a key of its own: fxbus owns "tenant", see WithTenant).
type tenants struct{}

func (tenants) Inject(ctx context.Context, md message.Metadata) {
	if t, ok := ctx.Value(tenantKey{}).(string); ok {
		md.Set("customer", t)
	}
}

func (tenants) Extract(ctx context.Context, md message.Metadata) context.Context {
	if t := md.Get("customer"); t != "" {
		return context.WithValue(ctx, tenantKey{}, t)
	}
	return ctx
}

// A registered Propagator carries what the emitting call's context held
// into the message and back into the consuming handler's context, and a
// follow-up the consumer routes carries it on.
func TestPropagator(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	placed, paid := topic(t, "orders"), topic(t, "payments")
	seen := newInbox[string]()
	service(t, gc, gc,
		fxbus.AsPropagator(func() tenants { return tenants{} }),
		fxbus.Subscribe[OrderPlaced](placed),
		fxbus.Route[OrderPaid](paid),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(ctx context.Context, e OrderPlaced) error {
				tenant, _ := ctx.Value(tenantKey{}).(string)
				seen.add("billing " + tenant)
				fxcqrs.Emit(ctx, OrderPaid{ID: e.ID})
				return nil
			}
		}),
	)
	orders := service(t, gc, gc,
		fxbus.AsPropagator(func() tenants { return tenants{} }),
		fxbus.Route[OrderPlaced](placed),
		fxbus.Subscribe[OrderPaid](paid),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPaid] {
			return func(ctx context.Context, _ OrderPaid) error {
				tenant, _ := ctx.Value(tenantKey{}).(string)
				seen.add("orders " + tenant)
				return nil
			}
		}),
	)
	ctx := context.WithValue(context.Background(), tenantKey{}, "acme")
	assert.NoError(t, fxcqrs.Exec(ctx, orders, PlaceOrder{ID: 1}))
	assert.ElementsMatch(t, []string{"billing acme", "orders acme"}, seen.wait(t, 2))
}
