package fxcqrs_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// An application's handlers, as fx constructors.

type placeOrderHandler struct{}

func newPlaceOrderHandler() *placeOrderHandler { return &placeOrderHandler{} }

func (*placeOrderHandler) Handle(ctx context.Context, c PlaceOrder) (Receipt, error) {
	fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID})
	return Receipt{ID: c.ID}, nil
}

type otherPlaceOrderHandler struct{}

func newOtherPlaceOrderHandler() *otherPlaceOrderHandler { return &otherPlaceOrderHandler{} }

func (*otherPlaceOrderHandler) Handle(context.Context, PlaceOrder) (Receipt, error) {
	return Receipt{}, nil
}

// shipOnPlaced is an event handler that depends on the mediator: it sends
// a command. That must not be a dependency cycle.
type shipOnPlaced struct{ m *fxcqrs.Mediator }

func newShipOnPlaced(m *fxcqrs.Mediator) *shipOnPlaced { return &shipOnPlaced{m: m} }

func (h *shipOnPlaced) Handle(ctx context.Context, e OrderPlaced) error {
	return fxcqrs.Exec(ctx, h.m, CancelOrder{ID: e.ID})
}

type shipHandler struct{ shipped *atomic.Int32 }

func (h shipHandler) Handle(context.Context, CancelOrder) error {
	h.shipped.Add(1)
	return nil
}

type notAHandler struct{}

func newNotAHandler() *notAHandler { return &notAHandler{} }

func TestModule(t *testing.T) {
	t.Parallel()
	var shipped atomic.Int32
	var m *fxcqrs.Mediator
	app := fxtest.New(t,
		fxcqrs.Module,
		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 3}}),
		fxcqrs.AsRequestHandler(newPlaceOrderHandler),
		fxcqrs.AsEventHandler(newShipOnPlaced),
		fxcqrs.AsCommandHandler(func() shipHandler { return shipHandler{&shipped} }),
		fx.Populate(&m),
	)
	app.RequireStart()
	defer app.RequireStop()

	got, err := fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{ID: 9})
	require.NoError(t, err)
	assert.Equal(t, Receipt{ID: 9}, got)
	assert.Equal(t, int32(1), shipped.Load(), "the event handler's command ran before Send returned")
	assert.Equal(t, 3, m.Stats().Events.Limit, "the supplied Config is used")
}

func TestModuleDefaults(t *testing.T) {
	t.Parallel()
	var m *fxcqrs.Mediator
	app := fxtest.New(t, fxcqrs.Module, fx.Populate(&m))
	app.RequireStart().RequireStop()
	st := m.Stats()
	assert.Equal(t, 1, st.Events.Limit)
	assert.Equal(t, 10, st.StreamEvents.Limit)
}

func TestModuleLogsRegistrations(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	app := fxtest.New(t,
		fxcqrs.Module,
		fx.Supply(zap.New(core)),
		fxcqrs.AsRequestHandler(newPlaceOrderHandler),
		fxcqrs.AsEventHandler(newShipOnPlaced),
		fx.Invoke(func(*fxcqrs.Mediator) {}),
	)
	app.RequireStart()
	started := logs.FilterMessage("mediator started").All()
	require.Len(t, started, 1)
	assert.Equal(t, zapcore.InfoLevel, started[0].Level)
	fields := started[0].ContextMap()
	assert.Equal(t, int64(1), fields["requestHandlers"])
	assert.Equal(t, int64(1), fields["eventHandlers"])
	assert.Equal(t, int64(0), fields["commandHandlers"])

	table := logs.FilterMessage("handler").All()
	require.Len(t, table, 2)
	assert.Equal(t, "*github.com/fxcqrs/fxcqrs_test.shipOnPlaced", table[0].ContextMap()["handler"])
	assert.Equal(t, zapcore.DebugLevel, table[0].Level)

	app.RequireStop()
	assert.Equal(t, 1, logs.FilterMessage("mediator stopped").Len())
}

func TestModuleInvalidGraphs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		opts     []fx.Option
		validate bool     // fx.ValidateApp catches it too
		want     []string // in the error
	}{
		{
			name:     "no Handle method",
			opts:     []fx.Option{fxcqrs.AsCommandHandler(newNotAHandler)},
			validate: true,
			want: []string{
				"fxcqrs.AsCommandHandler(github.com/fxcqrs/fxcqrs_test.newNotAHandler)",
				"has no method Handle",
				"Handle(context.Context, Cmd) error",
			},
		},
		{
			name:     "wrong Handle shape",
			opts:     []fx.Option{fxcqrs.AsCommandHandler(newPlaceOrderHandler)},
			validate: true,
			want: []string{
				"newPlaceOrderHandler",
				"has Handle(context.Context, fxcqrs_test.PlaceOrder) (fxcqrs_test.Receipt, error)",
				"a command handler needs Handle(context.Context, Cmd) error",
			},
		},
		{
			name:     "not a function",
			opts:     []fx.Option{fxcqrs.AsEventHandler(shipHandler{})},
			validate: true,
			want:     []string{"fxcqrs.AsEventHandler: want a constructor function"},
		},
		{
			name: "two handlers for one request type",
			opts: []fx.Option{
				fxcqrs.AsRequestHandler(newPlaceOrderHandler),
				fxcqrs.AsRequestHandler(newOtherPlaceOrderHandler),
			},
			want: []string{
				"github.com/fxcqrs/fxcqrs_test.PlaceOrder has two handlers",
				"*github.com/fxcqrs/fxcqrs_test.placeOrderHandler (request handler from github.com/fxcqrs/fxcqrs_test.newPlaceOrderHandler)",
				"*github.com/fxcqrs/fxcqrs_test.otherPlaceOrderHandler (request handler from github.com/fxcqrs/fxcqrs_test.newOtherPlaceOrderHandler)",
			},
		},
		{
			name: "negative limit",
			opts: []fx.Option{
				fx.Supply(fxcqrs.Config{StreamEvents: fxcqrs.EventConfig{MaxConcurrentHandlers: -2}}),
			},
			want: []string{"StreamEvents.MaxConcurrentHandlers (streamEvents.maxConcurrentHandlers) must not be negative: got -2"},
		},
		{
			name: "constructor returns nil",
			opts: []fx.Option{
				fxcqrs.AsEventHandler(func() *shipOnPlaced { return nil }),
			},
			want: []string{"event handler is a nil *github.com/fxcqrs/fxcqrs_test.shipOnPlaced from github.com/fxcqrs/fxcqrs_test.TestModuleInvalidGraphs"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := append([]fx.Option{fxcqrs.Module, fx.NopLogger, fx.Invoke(func(*fxcqrs.Mediator) {})}, tc.opts...)
			err := fx.New(opts...).Err()
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
			if tc.validate {
				err := fx.ValidateApp(opts...)
				require.Error(t, err, "fx.ValidateApp")
				assert.Contains(t, err.Error(), tc.want[0])
			}
		})
	}
}

func TestModuleValidateAppGoodGraph(t *testing.T) {
	t.Parallel()
	require.NoError(t, fx.ValidateApp(
		fxcqrs.Module,
		fxcqrs.AsRequestHandler(newPlaceOrderHandler),
		fxcqrs.AsEventHandler(newShipOnPlaced),
		fx.Invoke(func(*fxcqrs.Mediator) {}),
	))
}

// TestModuleAnnotationsPassThrough: the constructor's parameter tags apply.
func TestModuleAnnotationsPassThrough(t *testing.T) {
	t.Parallel()
	var got atomic.Value
	var m *fxcqrs.Mediator
	app := fxtest.New(t,
		fxcqrs.Module,
		fx.Supply(fx.Annotated{Name: "region", Target: "eu-west"}),
		fxcqrs.AsEventHandler(func(region string) eventFunc[Shipped] {
			return func(context.Context, Shipped) error { got.Store(region); return nil }
		}, fx.ParamTags(`name:"region"`)),
		fx.Populate(&m),
	)
	app.RequireStart()
	defer app.RequireStop()
	require.NoError(t, fxcqrs.Publish(context.Background(), m, Shipped{}))
	assert.Equal(t, "eu-west", got.Load())
}

func TestModuleConstructorError(t *testing.T) {
	t.Parallel()
	errDB := errors.New("db unreachable")
	err := fx.New(fx.NopLogger, fxcqrs.Module,
		fxcqrs.AsRequestHandler(func() (*placeOrderHandler, error) { return nil, errDB }),
		fx.Invoke(func(*fxcqrs.Mediator) {}),
	).Err()
	assert.ErrorIs(t, err, errDB)
}

// TestModuleNotReady: an Invoke in a module given before fxcqrs.Module
// runs before the handlers are registered.
func TestModuleNotReady(t *testing.T) {
	t.Parallel()
	var early error
	app := fxtest.New(t,
		fx.Module("early", fx.Invoke(func(m *fxcqrs.Mediator) {
			_, early = fxcqrs.Send[Receipt](context.Background(), m, PlaceOrder{})
		})),
		fxcqrs.Module,
		fxcqrs.AsRequestHandler(newPlaceOrderHandler),
	)
	app.RequireStart().RequireStop()
	require.ErrorIs(t, early, fxcqrs.ErrNotReady)
	assert.NotErrorIs(t, early, fxcqrs.ErrNoHandler)
}
