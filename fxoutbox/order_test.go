package fxoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
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
	for name, hook := range map[string]string{
		"Mediator": "fxcqrs.provideMediator.", "Bus": "/fxbus.startBus.", "Outbox": "(*Outbox).Stop",
	} {
		if strings.Contains(ev.FunctionName, hook) {
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
	tp := fmt.Sprintf("orders_%d", rand.Uint64()) // the in-process broker is the process's
	for _, p := range perms {
		rec := &stopOrder{}
		app := fxtest.New(t,
			modules[p[0]], modules[p[1]], modules[p[2]],
			fx.WithLogger(func() fxevent.Logger { return rec }),
			fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite}),
			fxbus.Route[OrderPlaced](tp),
			fxbus.Subscribe[OrderPlaced](tp),
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

// An inbound handler that outlives fx's stop deadline does not starve the
// hooks after the bus's: the mediator still stops (new calls get
// ErrStopped) and so does the relay, and the late stop says what was in
// flight.
func TestStopDeadlineIsShared(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	rec := &stopOrder{}
	core, logs := observer.New(zapcore.WarnLevel)
	entered, release := make(chan struct{}), make(chan struct{})
	var (
		m   *fxcqrs.Mediator
		bus *fxbus.Bus
	)
	tp := fmt.Sprintf("orders_%d", rand.Uint64())
	app := fx.New(
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.WithLogger(func() fxevent.Logger { return rec }),
		// Two event slots: the inbound handler holds one while it waits
		// for release, and the relay may deliver it (woken by the commit)
		// before Exec's own in-process handling of the event has taken
		// the only one, which would then wait for release too.
		fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite}, zap.New(core),
			fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 2}}),
		fxbus.Route[OrderPlaced](tp),
		fxbus.Subscribe[OrderPlaced](tp),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			var once sync.Once
			return func(ctx context.Context, _ OrderPlaced) error {
				if fxbus.MessageID(ctx) != "" { // the inbound delivery, not the in-process one
					once.Do(func() { close(entered) })
					<-release
				}
				return nil
			}
		}),
		fx.Populate(&m, &bus),
	)
	require.NoError(t, app.Err())
	require.NoError(t, app.Start(context.Background()))
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	<-entered

	stop, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	require.Error(t, app.Stop(stop), "the bus could not finish")
	require.ErrorIs(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 2}), fxcqrs.ErrStopped, "the mediator stopped all the same")
	assert.Contains(t, rec.order, "Outbox", "and so did the relay")
	assert.Equal(t, 1, logs.FilterMessageSnippet("stop deadline passed with messages in flight").Len())

	close(release)
	require.NoError(t, bus.Stop(context.Background()), "the router finishes once the handler returns")
}

// Two applications in one binary on the defaults share the process's
// in-process broker: what the producer's relay sends before the consumer
// subscribed waits in the outbox, and arrives once it has; nothing is
// deleted unreceived.
func TestTwoAppsOnTheDefaults(t *testing.T) {
	t.Parallel()
	tp := fmt.Sprintf("orders_%d", rand.Uint64())
	var producer *fxcqrs.Mediator
	prod := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(openDatabase(t, fxoutbox.SQLite).DB, fxoutbox.Config{Dialect: fxoutbox.SQLite, Relay: fxoutbox.RelayConfig{
			PollInterval: 10 * time.Millisecond, RetryInitial: time.Millisecond, RetryMax: 20 * time.Millisecond,
		}}),
		fxbus.Route[OrderPlaced](tp),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
				return nil
			}
		}),
		fx.Populate(&producer),
	)
	prod.RequireStart()
	defer prod.RequireStop()
	const n = 20
	for i := range n {
		require.NoError(t, fxcqrs.Exec(context.Background(), producer, PlaceOrder{ID: i}))
	}

	got := make(chan int, n)
	cons := fxtest.New(t,
		fxcqrs.Module, fxbus.Module,
		fxbus.Subscribe[OrderPlaced](tp),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(_ context.Context, e OrderPlaced) error { got <- e.ID; return nil }
		}),
	)
	cons.RequireStart()
	defer cons.RequireStop()
	seen := map[int]bool{}
	timeout := time.After(30 * time.Second)
	for len(seen) < n {
		select {
		case id := <-got:
			seen[id] = true
		case <-timeout:
			t.Fatalf("received %d of %d: the rows were sent where nobody listens", len(seen), n)
		}
	}
}
