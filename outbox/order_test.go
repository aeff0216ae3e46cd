package fxoutbox_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	fxbus "github.com/fxcqrs/fxcqrs/bus"
	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"
	"go.uber.org/fx/fxtest"
)

// stopOrder records which module's OnStop hooks ran, in order.
type stopOrder struct {
	mu    sync.Mutex
	order []string
}

func (s *stopOrder) LogEvent(e fxevent.Event) {
	ev, ok := e.(*fxevent.OnStopExecuted)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range []string{"Mediator", "Bus", "Outbox"} {
		if strings.Contains(ev.FunctionName, "(*"+name+")") {
			s.order = append(s.order, name)
		}
	}
}

// The modules stop in one order whatever order the application lists
// them in: the bus stops taking messages, then the mediator drains, then
// the outbox's relay stops.
func TestStopOrderDoesNotDependOnTheModulesOrder(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	modules := []fx.Option{fxcqrs.Module, fxbus.Module, fxoutbox.Module}
	perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	var first []string
	for _, p := range perms {
		rec := &stopOrder{}
		app := fxtest.New(t,
			modules[p[0]], modules[p[1]], modules[p[2]],
			fx.WithLogger(func() fxevent.Logger { return rec }),
			fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite}),
			fxbus.Route[OrderPlaced]("orders"),
			fxbus.Subscribe[OrderPlaced]("orders"),
			fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
				return func(context.Context, PlaceOrder) error { return nil }
			}),
		)
		app.RequireStart()
		app.RequireStop()
		require.Len(t, rec.order, 3, "modules order %v", p)
		if first == nil {
			first = rec.order
			continue
		}
		assert.Equal(t, first, rec.order, "modules order %v", p)
	}
	assert.Equal(t, []string{"Bus", "Mediator", "Outbox"}, first)
}
