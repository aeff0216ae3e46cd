package fxcqrs_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

type (
	RoomBooked    struct{ Room int }
	RoomCancelled struct{ Room int }
	BookRoom      struct{ Room int }
	RoomPrice     struct{ Room int }
)

// projector is one type that handles two event types, a method each.
type projector struct {
	mu  sync.Mutex
	log []string
}

func (p *projector) Booked(_ context.Context, e RoomBooked) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, fmt.Sprint("booked ", e.Room))
	return nil
}

func (p *projector) Cancelled(_ context.Context, e RoomCancelled) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, fmt.Sprint("cancelled ", e.Room))
	return nil
}

// handlersSeen records the Handler of each call middleware sees.
type handlersSeen struct {
	mu    sync.Mutex
	names []string
}

func (h *handlersSeen) Handle(ctx context.Context, c fxcqrs.Call, next fxcqrs.Next) (any, error) {
	if c.Handler != "" {
		h.mu.Lock()
		h.names = append(h.names, c.Handler)
		h.mu.Unlock()
	}
	return next(ctx)
}

// Handlers from functions: one projector's two methods handle two event
// types, a command and a request are plain functions, and each call
// carries the name it was given, where the inbox and the logs read it.
func TestHandlerFuncs(t *testing.T) {
	t.Parallel()
	p := &projector{}
	seen := &handlersSeen{}
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithEventHandlers(fxcqrs.EventFunc("projector.booked", p.Booked), fxcqrs.EventFunc("projector.cancelled", p.Cancelled)),
		fxcqrs.WithCommandHandlers(fxcqrs.CommandFunc("rooms.book", func(ctx context.Context, c BookRoom) error {
			fxcqrs.Emit(ctx, RoomBooked(c))
			return nil
		})),
		fxcqrs.WithRequestHandlers(fxcqrs.RequestFunc("rooms.price", func(_ context.Context, r RoomPrice) (int, error) { return 100 + r.Room, nil })),
		fxcqrs.WithMiddleware(seen))
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	ctx := context.Background()
	require.NoError(t, fxcqrs.Exec(ctx, m, BookRoom{Room: 7}))
	require.NoError(t, fxcqrs.Publish(ctx, m, RoomCancelled{Room: 7}))
	price, err := fxcqrs.Send[int](ctx, m, RoomPrice{Room: 7})
	require.NoError(t, err)
	assert.Equal(t, 107, price)
	assert.Equal(t, []string{"booked 7", "cancelled 7"}, p.log)
	assert.Equal(t, []string{"rooms.book", "projector.booked", "projector.cancelled", "rooms.price"}, seen.names)
	assert.Equal(t, []string{"projector.booked"}, m.EventHandlers(reflect.TypeFor[RoomBooked]()))
}

// What a name cannot be, and two handlers of one event under one name:
// refused, each problem named, all at once.
func TestHandlerFuncsRefused(t *testing.T) {
	t.Parallel()
	p := &projector{}
	_, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(
		fxcqrs.EventFunc("projector.booked", p.Booked),
		fxcqrs.EventFunc("projector.booked", func(context.Context, RoomBooked) error { return nil }),
		fxcqrs.EventFunc("", p.Cancelled),
		fxcqrs.EventFunc[RoomCancelled]("has space", nil),
		fxcqrs.EventFunc("no\u00a0break", p.Cancelled),
	))
	require.Error(t, err)
	assert.ErrorContains(t, err, `RoomBooked has two handlers named "projector.booked"`)
	assert.ErrorContains(t, err, `a handler's name is not empty and has no spaces`)
	assert.ErrorContains(t, err, `the handler named "has space" has a nil func`)
	assert.ErrorContains(t, err, `names itself "no\u00a0break"`)

	// A name may not be another handler's type name either.
	_, err = fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(
		EmailHandler{}, fxcqrs.EventFunc("github.com/fxcqrs/fxcqrs_test.EmailHandler", func(context.Context, OrderPlacedEvent) error { return nil })))
	assert.ErrorContains(t, err, "two handlers named")

	// Two handlers of one type, neither named: as before, both run.
	_, err = fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(EmailHandler{}, EmailHandler{}))
	assert.NoError(t, err)
}

// Under fx: a constructor returns the handler, named; two of one name
// fail the app's start, naming both constructors.
func TestHandlerFuncsUnderFx(t *testing.T) {
	t.Parallel()
	var m *fxcqrs.Mediator
	app := fxtest.New(t, fx.NopLogger, fxcqrs.Module,
		fx.Provide(func() *projector { return &projector{} }),
		fxcqrs.AsEventHandler(func(p *projector) fxcqrs.EventHandler[RoomBooked] {
			return fxcqrs.EventFunc("projector.booked", p.Booked)
		}),
		fxcqrs.AsEventHandler(func(p *projector) fxcqrs.EventHandler[RoomCancelled] {
			return fxcqrs.EventFunc("projector.cancelled", p.Cancelled)
		}),
		fx.Populate(&m))
	app.RequireStart()
	defer app.RequireStop()
	require.NoError(t, fxcqrs.Publish(context.Background(), m, RoomBooked{Room: 1}))
	assert.True(t, slices.Equal([]string{"projector.booked"}, m.EventHandlers(reflect.TypeFor[RoomBooked]())))

	bad := fx.New(fx.NopLogger, fxcqrs.Module,
		fx.Provide(func() *projector { return &projector{} }),
		fxcqrs.AsEventHandler(newBookedProjection),
		fxcqrs.AsEventHandler(newBookedAudit))
	err := bad.Err()
	if err == nil {
		err = bad.Start(context.Background())
	}
	require.Error(t, err)
	assert.ErrorContains(t, err, `two handlers named "projector.booked"`)
	assert.ErrorContains(t, err, "newBookedProjection")
	assert.ErrorContains(t, err, "newBookedAudit")
}

func newBookedProjection(p *projector) fxcqrs.EventHandler[RoomBooked] {
	return fxcqrs.EventFunc("projector.booked", p.Booked)
}

func newBookedAudit() fxcqrs.EventHandler[RoomBooked] {
	return fxcqrs.EventFunc("projector.booked", func(context.Context, RoomBooked) error { return nil })
}

// One type handles two event types, a method each, each under a name of
// its own that survives a rename of the type.
func ExampleEventFunc() {
	p := &projector{}
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(
		fxcqrs.EventFunc("projector.booked", p.Booked),
		fxcqrs.EventFunc("projector.cancelled", p.Cancelled),
	))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	_ = fxcqrs.Publish(ctx, m, RoomBooked{Room: 12})
	_ = fxcqrs.Publish(ctx, m, RoomCancelled{Room: 12})
	fmt.Println(p.log)
	fmt.Println(m.EventHandlers(reflect.TypeFor[RoomBooked]()))
	// Output:
	// [booked 12 cancelled 12]
	// [projector.booked]
}
