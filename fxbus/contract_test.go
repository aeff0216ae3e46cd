package fxbus_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The contract states each type's version: a route the version it
// writes, a subscription the version it decodes and the oldest one its
// upcaster chain reads (its own version without upcasters, 1 for an
// undeclared type); an interface route has none of its own.
func TestContractVersions(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	bus, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc, Upcasters: placedUpcasters()},
		[]fxbus.Routing{
			fxbus.NewRoute[Placed]("placed", fxbus.Version(3)),
			fxbus.NewRoute[OrderPaid]("paid"),
			fxbus.NewRoute[DomainEvent]("audit"),
		},
		[]fxbus.Subscription{
			fxbus.NewSubscription[Placed]("placed", fxbus.Version(3)),
			fxbus.NewSubscription[Shelved]("shelved", fxbus.Version(2)),
			fxbus.NewSubscription[OrderPaid]("paid"),
		})
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.Stop(context.Background()) })
	c := bus.Contract()

	routes := map[string]int{}
	for _, r := range c.Routes {
		routes[r.Type.String()] = r.Version
	}
	assert.Equal(t, map[string]int{"fxbus_test.Placed": 3, "fxbus_test.OrderPaid": 1, "fxbus_test.DomainEvent": 0}, routes)

	type versions struct{ version, oldest int }
	subs := map[string]versions{}
	for _, s := range c.Subscriptions {
		subs[s.Name] = versions{s.Version, s.Oldest}
	}
	assert.Equal(t, map[string]versions{"Placed": {3, 1}, "Shelved": {2, 2}, "OrderPaid": {1, 1}}, subs)
	assert.Equal(t, reflect.TypeFor[Placed](), c.Subscriptions[1].Type, "by topic, then name")
}
