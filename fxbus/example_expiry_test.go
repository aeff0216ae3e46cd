package fxbus_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// The expiry examples' messages.
type (
	// PriceQuoted is a price, worth half a minute.
	PriceQuoted struct {
		Quote int
		Cents int
	}
	// QuotePrice asks for a quote.
	QuotePrice struct{ Quote int }
)

// snippet:expiring

// CodeSent is a one-time code, worth nothing once it expires: it says
// itself when (fxbus.Expiring), so that each message has its own time.
type CodeSent struct {
	Code      string
	ExpiresAt time.Time
}

// DeliverBy is the code's deliver-by time.
func (c CodeSent) DeliverBy() time.Time { return c.ExpiresAt }

// end snippet

type quotePrice struct{}

func (quotePrice) Handle(ctx context.Context, c QuotePrice) error {
	fxcqrs.Emit(ctx, PriceQuoted{Quote: c.Quote, Cents: 1999})
	return nil
}

// A pricing service routes quotes worth 30 seconds; a checkout service
// that receives one later dead-letters it, with the reason "expired",
// instead of handling it. Each service has its own clock (Config.Now),
// fixed here: the checkout falls a minute behind before the second quote.
func ExampleDeliverWithin() {
	ctx := context.Background()
	broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
	defer broker.Close()
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	pricingClock, checkoutClock := &fakeClock{now: start}, &fakeClock{now: start}

	// The checkout service.
	handled := make(chan PriceQuoted, 2)
	checkout, err := fxbus.New(fxbus.Config{Publisher: broker, Subscriber: broker, Now: checkoutClock.Now}, nil,
		[]fxbus.Subscription{fxbus.NewSubscription[PriceQuoted]("example-quotes")})
	if err != nil {
		panic(err)
	}
	checkoutMediator, _ := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(checkout),
		fxcqrs.WithEventHandlers(eventFunc[PriceQuoted](func(_ context.Context, q PriceQuoted) error {
			handled <- q
			return nil
		})))
	dead, _ := broker.Subscribe(ctx, "example-quotes_poison")
	if err := checkout.Start(ctx, checkoutMediator); err != nil {
		panic(err)
	}
	defer func() { _ = checkout.Stop(ctx); _ = checkoutMediator.Stop(ctx) }()

	// The pricing service.
	// snippet:route
	quotes := fxbus.NewRoute[PriceQuoted]("example-quotes", fxbus.DeliverWithin(30*time.Second))
	// end snippet
	pricing, err := fxbus.New(fxbus.Config{Publisher: broker, Now: pricingClock.Now}, []fxbus.Routing{quotes}, nil)
	if err != nil {
		panic(err)
	}
	m, _ := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(pricing), fxcqrs.WithCommandHandlers(quotePrice{}))
	defer func() { _ = m.Stop(ctx) }()

	if err := fxcqrs.Exec(ctx, m, QuotePrice{Quote: 1}); err != nil {
		panic(err)
	}
	fmt.Println("handled quote", (<-handled).Quote)

	checkoutClock.Advance(time.Minute)
	if err := fxcqrs.Exec(ctx, m, QuotePrice{Quote: 2}); err != nil {
		panic(err)
	}
	letter := <-dead
	letter.Ack()
	reason := letter.Metadata.Get(middleware.ReasonForPoisonedKey)
	fmt.Println("dead letter:", string(letter.Payload), strings.SplitN(reason, ":", 2)[0])
	fmt.Println("deliver by", letter.Metadata.Get(fxbus.MetadataDeliverBy))
	// Output:
	// handled quote 1
	// dead letter: {"Quote":2,"Cents":1999} expired
	// deliver by 2026-12-07T12:00:30.000000000Z
}

// A call's context gives every message the call makes a deliver-by time:
// here a minute from the clock, on a route that has none of its own.
func ExampleWithDeliverBy() {
	clock := &fakeClock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
	defer broker.Close()
	bus, err := fxbus.New(fxbus.Config{Publisher: broker, Now: clock.Now},
		[]fxbus.Routing{fxbus.NewRoute[PriceQuoted]("example-prices"), fxbus.NewRoute[CodeSent]("example-codes")}, nil)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	// snippet:call
	ctx = fxbus.WithDeliverBy(ctx, clock.Now().Add(time.Minute))
	// end snippet
	out, _ := bus.Messages(ctx, []any{
		PriceQuoted{Quote: 3},
		CodeSent{Code: "481516", ExpiresAt: clock.Now().Add(10 * time.Second)}, // earlier: its own time wins
	})
	for _, o := range out {
		fmt.Println(o.Topic, o.Message.Metadata.Get(fxbus.MetadataDeliverBy))
	}
	// Output:
	// example-prices 2026-12-07T12:01:00.000000000Z
	// example-codes 2026-12-07T12:00:10.000000000Z
}
