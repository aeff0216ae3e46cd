package fxcqrs_test

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/fx"
)

// The examples' domain.
type (
	PlaceOrderCmd struct {
		ID   int
		Item string
	}
	OrderID           int
	OrderPlacedEvent  struct{ ID int }
	StockReservedEvt  struct{ ID int }
	GetOrderQuery     struct{ ID int }
	WatchTicks        struct{ N int }
	PaymentReceived   struct{ Amount int }
	PlaceOrderHandler struct{}
	EmailHandler      struct{}
	StockHandler      struct{}
	LedgerHandler     struct{}
	TickHandler       struct{}
	OrderQueryHandler struct{}
)

func (PlaceOrderHandler) Handle(ctx context.Context, c PlaceOrderCmd) (OrderID, error) {
	fxcqrs.Emit(ctx, OrderPlacedEvent{ID: c.ID})
	return OrderID(c.ID), nil
}

func (EmailHandler) Handle(_ context.Context, e OrderPlacedEvent) error {
	fmt.Println("email: order", e.ID, "confirmed")
	return nil
}

func (StockHandler) Handle(ctx context.Context, e OrderPlacedEvent) error {
	fmt.Println("stock: reserved for order", e.ID)
	fxcqrs.Emit(ctx, StockReservedEvt{ID: e.ID}) // a follow-up event
	return nil
}

func (LedgerHandler) Handle(_ context.Context, p PaymentReceived) error {
	if p.Amount < 0 {
		return errors.New("negative payment")
	}
	fmt.Println("ledger: booked", p.Amount)
	return nil
}

func (TickHandler) Handle(ctx context.Context, w WatchTicks) iter.Seq2[int, error] {
	return func(yield func(int, error) bool) {
		for i := 1; i <= w.N; i++ {
			fxcqrs.Emit(ctx, PaymentReceived{Amount: i * 10})
			if !yield(i, nil) {
				return
			}
		}
	}
}

func ExampleSend() {
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithRequestHandlers(PlaceOrderHandler{}),
		fxcqrs.WithEventHandlers(EmailHandler{}),
	)
	if err != nil {
		panic(err)
	}
	defer m.Stop(context.Background()) //nolint:errcheck // nothing in flight

	id, err := fxcqrs.Send[OrderID](context.Background(), m, PlaceOrderCmd{ID: 7, Item: "lamp"})
	fmt.Println("placed", id, err)
	// Output:
	// email: order 7 confirmed
	// placed 7 <nil>
}

func ExampleEmit() {
	// Handlers of one event run in the order of their type names; the
	// follow-up event StockReservedEvt has no handler, which is fine.
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithRequestHandlers(PlaceOrderHandler{}),
		fxcqrs.WithEventHandlers(StockHandler{}, EmailHandler{}),
	)
	if err != nil {
		panic(err)
	}
	defer m.Stop(context.Background()) //nolint:errcheck // nothing in flight

	_, err = fxcqrs.Send[OrderID](context.Background(), m, PlaceOrderCmd{ID: 8})
	fmt.Println(err)
	// Output:
	// email: order 8 confirmed
	// stock: reserved for order 8
	// <nil>
}

func ExamplePublish() {
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(LedgerHandler{}))
	if err != nil {
		panic(err)
	}
	defer m.Stop(context.Background()) //nolint:errcheck // nothing in flight

	fmt.Println(fxcqrs.Publish(context.Background(), m, PaymentReceived{Amount: 30}))
	err = fxcqrs.Publish(context.Background(), m, PaymentReceived{Amount: -1})
	var evErr *fxcqrs.EventError
	if errors.As(err, &evErr) {
		fmt.Println(evErr.Failures[0].Handler, "failed:", evErr.Failures[0].Err)
	}
	// Output:
	// ledger: booked 30
	// <nil>
	// github.com/fxcqrs/fxcqrs_test.LedgerHandler failed: negative payment
}

func ExampleStream() {
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithStreamHandlers(TickHandler{}),
		fxcqrs.WithEventHandlers(LedgerHandler{}),
	)
	if err != nil {
		panic(err)
	}
	defer m.Stop(context.Background()) //nolint:errcheck // nothing in flight

	for tick, err := range fxcqrs.Stream[int](context.Background(), m, WatchTicks{N: 3}) {
		if err != nil {
			fmt.Println("error:", err)
			break
		}
		fmt.Println("tick", tick) // after its event was handled
	}
	// Output:
	// ledger: booked 10
	// tick 1
	// ledger: booked 20
	// tick 2
	// ledger: booked 30
	// tick 3
}

func ExampleModule() {
	app := fx.New(
		fx.NopLogger,
		fxcqrs.Module,
		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 3}}),
		fxcqrs.AsRequestHandler(func() PlaceOrderHandler { return PlaceOrderHandler{} }),
		fxcqrs.AsEventHandler(func() EmailHandler { return EmailHandler{} }),
		fx.Invoke(func(lc fx.Lifecycle, m *fxcqrs.Mediator) {
			lc.Append(fx.StartHook(func(ctx context.Context) error {
				id, err := fxcqrs.Send[OrderID](ctx, m, PlaceOrderCmd{ID: 9})
				fmt.Println("placed", id)
				return err
			}))
		}),
	)
	if err := app.Start(context.Background()); err != nil {
		panic(err)
	}
	if err := app.Stop(context.Background()); err != nil {
		panic(err)
	}
	// Output:
	// email: order 9 confirmed
	// placed 9
}

func ExampleRecordEvents() {
	ctx, rec := fxcqrs.RecordEvents(context.Background())
	_, _ = PlaceOrderHandler{}.Handle(ctx, PlaceOrderCmd{ID: 5})
	fmt.Printf("%+v\n", rec.Events())
	// Output:
	// [{ID:5}]
}

func ExampleEventError() {
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(LedgerHandler{}))
	if err != nil {
		panic(err)
	}
	defer m.Stop(context.Background()) //nolint:errcheck // nothing in flight

	err = fxcqrs.Publish(context.Background(), m, PaymentReceived{Amount: -5})
	fmt.Println(err)
	// Output:
	// fxcqrs: 1 event handler failed: github.com/fxcqrs/fxcqrs_test.PaymentReceived -> github.com/fxcqrs/fxcqrs_test.LedgerHandler: negative payment
}

// ShipOrder is a command: it answers with nothing but an error.
type ShipOrder struct{ ID int }

type ShipOrderHandler struct{}

func (ShipOrderHandler) Handle(ctx context.Context, s ShipOrder) error {
	if s.ID <= 0 {
		return errors.New("no such order")
	}
	fxcqrs.Emit(ctx, PaymentReceived{Amount: s.ID})
	return nil
}

func ExampleExec() {
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(ShipOrderHandler{}),
		fxcqrs.WithEventHandlers(LedgerHandler{}),
	)
	if err != nil {
		panic(err)
	}
	defer m.Stop(context.Background()) //nolint:errcheck // nothing in flight

	fmt.Println(fxcqrs.Exec(context.Background(), m, ShipOrder{ID: 12}))
	fmt.Println(fxcqrs.Exec(context.Background(), m, ShipOrder{ID: 0}))
	// Output:
	// ledger: booked 12
	// <nil>
	// no such order
}

func ExampleMiddlewareFunc() {
	timing := fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
		fmt.Println("before", call.Kind, call.Handler)
		out, err := next(ctx)
		fmt.Println("after", call.Kind, err)
		return out, err
	})
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(ShipOrderHandler{}),
		fxcqrs.WithEventHandlers(LedgerHandler{}),
		fxcqrs.WithMiddleware(fxcqrs.ForKinds(timing, fxcqrs.KindCommand)),
	)
	if err != nil {
		panic(err)
	}
	defer m.Stop(context.Background()) //nolint:errcheck // nothing in flight

	_ = fxcqrs.Exec(context.Background(), m, ShipOrder{ID: 3})
	// Output:
	// before command github.com/fxcqrs/fxcqrs_test.ShipOrderHandler
	// after command <nil>
	// ledger: booked 3
}
