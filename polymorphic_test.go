package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The aggregate pattern: an order records domain events, typed as an
// interface, and the handler emits them all.
type (
	DomainEvent interface{ OrderID() int }
	Paid        struct{ ID int }
	Packed      struct{ ID int }
	Dispatched  struct{ ID int }
	// Auditable is a second interface, for the order between interfaces.
	Auditable interface{ Audit() string }

	CloseOrder     struct{ ID int }
	WatchOrder     struct{ ID int }
	OrderFollowUps struct{ ID int }
)

func (e Paid) OrderID() int       { return e.ID }
func (e Packed) OrderID() int     { return e.ID }
func (e Dispatched) OrderID() int { return e.ID }
func (e Dispatched) Audit() string {
	return fmt.Sprint("dispatched ", e.ID)
}

type order struct {
	id     int
	events []DomainEvent
}

func (o *order) close() {
	o.events = append(o.events, Paid{o.id}, Packed{o.id}, Dispatched{o.id})
}

func polymorphicMediator(t *testing.T, cfg fxcqrs.Config, rec *recorder) *fxcqrs.Mediator {
	t.Helper()
	record := func(label string) func(context.Context, DomainEvent) error {
		return func(_ context.Context, e DomainEvent) error {
			rec.add(fmt.Sprintf("%s %T", label, e))
			return nil
		}
	}
	return newMediator(t, cfg,
		fxcqrs.WithCommandHandlers(commandFunc[CloseOrder](func(ctx context.Context, c CloseOrder) error {
			o := &order{id: c.ID}
			o.close()
			for _, e := range o.events {
				fxcqrs.Emit(ctx, e) // E = DomainEvent
			}
			return nil
		})),
		fxcqrs.WithStreamHandlers(streamFunc[WatchOrder, int](func(ctx context.Context, w WatchOrder) func(func(int, error) bool) {
			return func(yield func(int, error) bool) {
				for _, e := range []DomainEvent{Paid{w.ID}, Packed{w.ID}} {
					fxcqrs.Emit(ctx, e)
					if !yield(e.OrderID(), nil) {
						return
					}
				}
			}
		})),
		fxcqrs.WithEventHandlers(
			eventFunc[Paid](func(context.Context, Paid) error { rec.add("concrete Paid"); return nil }),
			eventFunc[Packed](func(ctx context.Context, p Packed) error {
				rec.add("concrete Packed")
				var follow DomainEvent = Dispatched(p) // a follow-up, typed as the interface too
				fxcqrs.Emit(ctx, follow)
				return nil
			}),
			eventFunc[Dispatched](func(context.Context, Dispatched) error { rec.add("concrete Dispatched"); return nil }),
			eventFunc[DomainEvent](record("domain")),
			eventFunc[Auditable](func(_ context.Context, a Auditable) error { rec.add("audit " + a.Audit()); return nil }),
		),
	)
}

// Events emitted or published with an interface static type reach the
// handlers of their dynamic type, then the handlers of the interfaces it
// implements, by interface type name; follow-ups and stream items too, in
// every mode.
func TestInterfaceTypedEvents(t *testing.T) {
	t.Parallel()
	for name, cfg := range eventModes() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			m := polymorphicMediator(t, cfg, rec)

			require.NoError(t, fxcqrs.Exec(context.Background(), m, CloseOrder{ID: 1}))
			got := rec.get()
			want := []string{
				"concrete Paid", "domain fxcqrs_test.Paid",
				"concrete Packed", "domain fxcqrs_test.Packed",
				"concrete Dispatched", "domain fxcqrs_test.Dispatched", "audit dispatched 1", // emitted
				"concrete Dispatched", "domain fxcqrs_test.Dispatched", "audit dispatched 1", // Packed's follow-up
			}
			assert.ElementsMatch(t, want, got)
			if cfg.Events.Sequential || cfg.Events.MaxConcurrentHandlers <= 1 {
				// One at a time: the documented order exactly. An
				// interface's handlers come after the type's own, and
				// interfaces run by full type name: Auditable first.
				assert.Equal(t, "concrete Paid", got[0])
				assert.Equal(t, "domain fxcqrs_test.Paid", got[1])
				i := slices.Index(got, "concrete Dispatched")
				assert.Equal(t, []string{"concrete Dispatched", "audit dispatched 1", "domain fxcqrs_test.Dispatched"}, got[i:i+3])
			}

			rec.order = nil
			var e DomainEvent = Paid{ID: 2}
			require.NoError(t, fxcqrs.Publish(context.Background(), m, e))
			require.NoError(t, fxcqrs.Publish[any](context.Background(), m, Packed{ID: 2}))
			assert.ElementsMatch(t, []string{
				"concrete Paid", "domain fxcqrs_test.Paid",
				"concrete Packed", "domain fxcqrs_test.Packed",
				"concrete Dispatched", "domain fxcqrs_test.Dispatched", "audit dispatched 2",
			}, rec.get())

			rec.order = nil
			var items []int
			for item, err := range fxcqrs.Stream[int](context.Background(), m, WatchOrder{ID: 3}) {
				require.NoError(t, err)
				items = append(items, item)
			}
			assert.Equal(t, []int{3, 3}, items)
			assert.Contains(t, rec.get(), "domain fxcqrs_test.Paid")
			assert.Contains(t, rec.get(), "audit dispatched 3")
		})
	}
}

// A nil interface is an error, not a silent drop: Publish returns one, and
// Emit panics inside the handler, which the call reports as a
// *PanicError.
func TestNilInterfaceEvent(t *testing.T) {
	t.Parallel()
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(commandFunc[CloseOrder](func(ctx context.Context, _ CloseOrder) error {
			var e DomainEvent
			fxcqrs.Emit(ctx, e)
			return nil
		})),
		fxcqrs.WithEventHandlers(eventFunc[DomainEvent](func(context.Context, DomainEvent) error { return nil })),
	)
	var e DomainEvent
	err := fxcqrs.Publish(context.Background(), m, e)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nil github.com/fxcqrs/fxcqrs_test.DomainEvent event")
	assert.Zero(t, m.Stats().InFlight)

	err = fxcqrs.Exec(context.Background(), m, CloseOrder{})
	var pe *fxcqrs.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Contains(t, fmt.Sprint(pe.Value), "nil fxcqrs_test.DomainEvent event")
}

// A handler of an interface type sees events whose types have no handler
// of their own, and its failures are reported like any.
func TestInterfaceHandlerAlone(t *testing.T) {
	t.Parallel()
	errAudit := errors.New("audit down")
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithEventHandlers(eventFunc[Auditable](func(context.Context, Auditable) error { return errAudit })),
	)
	err := fxcqrs.Publish(context.Background(), m, Dispatched{ID: 4})
	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr)
	require.Len(t, evErr.Failures, 1)
	assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.Dispatched", evErr.Failures[0].EventType)
	assert.Equal(t, Dispatched{ID: 4}, evErr.Failures[0].Event)
	assert.ErrorIs(t, err, errAudit)
	// A type that implements nothing handled is no error.
	require.NoError(t, fxcqrs.Publish(context.Background(), m, Paid{ID: 4}))
}

// An event handler registered as a command handler (the same Handle shape)
// would make its events vanish: an emitted event of that type is warned
// about once, naming the handler and how it was registered. Exec on a type
// that only has event handlers says to call Publish.
func TestMisregisteredEventHandler(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.WarnLevel)
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithLogger(zap.New(core)),
		fxcqrs.WithCommandHandlers(
			emitAll[PlaceOrder](emit(OrderPlaced{ID: 1}), emit(OrderPlaced{ID: 2})),
			eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return nil }), // meant as an event handler
		),
		fxcqrs.WithEventHandlers(eventFunc[Shipped](func(context.Context, Shipped) error { return nil })),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	warns := logs.FilterMessageSnippet("has no event handler").All()
	require.Len(t, warns, 1, "once per type")
	fields := warns[0].ContextMap()
	assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.OrderPlaced", fields["event"])
	assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.eventFunc[github.com/fxcqrs/fxcqrs_test.OrderPlaced]", fields["handler"])
	assert.Contains(t, fields["registeredAs"], "AsCommandHandler")

	err := fxcqrs.Exec(context.Background(), m, Shipped{})
	require.ErrorIs(t, err, fxcqrs.ErrNoHandler)
	assert.Contains(t, err.Error(), "it has event handlers only")
	assert.Contains(t, err.Error(), "call Publish")
}
