package fxcqrs_test

import (
	"context"
	"fmt"

	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/fx"
)

// The README's minimal application, whole.

// snippet:minimal
type (
	Checkout    struct{ Cart string } // a request: answered with a receipt
	CartReceipt string
	CheckedOut  struct{ Cart string } // an event: emitted by the handler
)

type CheckoutHandler struct{}

func (CheckoutHandler) Handle(ctx context.Context, c Checkout) (CartReceipt, error) {
	fxcqrs.Emit(ctx, CheckedOut(c)) // runs before Send returns
	return CartReceipt("receipt for " + c.Cart), nil
}

type MailReceipt struct{}

func (MailReceipt) Handle(_ context.Context, e CheckedOut) error {
	fmt.Println("mailed the receipt of", e.Cart)
	return nil
}

func Example_minimal() {
	var m *fxcqrs.Mediator
	app := fx.New(
		fx.NopLogger,
		fxcqrs.Module, // provides the *fxcqrs.Mediator
		fxcqrs.AsRequestHandler(func() CheckoutHandler { return CheckoutHandler{} }),
		fxcqrs.AsEventHandler(func() MailReceipt { return MailReceipt{} }),
		fx.Populate(&m), // or take it in your HTTP handlers' constructors
	)
	if err := app.Start(context.Background()); err != nil {
		panic(err)
	}
	defer app.Stop(context.Background()) //nolint:errcheck // an example

	receipt, err := fxcqrs.Send[CartReceipt](context.Background(), m, Checkout{Cart: "cart-7"})
	fmt.Println(receipt, err)
	// Output:
	// mailed the receipt of cart-7
	// receipt for cart-7 <nil>
}

// end snippet
