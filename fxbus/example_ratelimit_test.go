package fxbus_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// A subscription limits each key to one message a second: key a's second
// message waits for the clock, without holding back key b's.
func ExampleRateLimit() {
	ctx := context.Background()
	broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
	defer broker.Close()
	clock := newTimerClock()

	// snippet:ratelimit
	sub := fxbus.NewSubscription[Tick]("example-ticks",
		fxbus.RateLimit(fxbus.Limit{Per: fxbus.PerKey, Rate: 1, Every: time.Second, Burst: 1}),
		fxbus.FairShares(fxbus.PerTenant),
	)
	// end snippet
	handled := make(chan Tick, 3)
	bus, err := fxbus.New(fxbus.Config{Publisher: broker, Subscriber: broker, Now: clock.Now, After: clock.After}, nil, []fxbus.Subscription{sub})
	if err != nil {
		panic(err)
	}
	m, _ := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithForwarder(bus),
		fxcqrs.WithEventHandlers(eventFunc[Tick](func(_ context.Context, e Tick) error {
			handled <- e
			return nil
		})))
	if err := bus.Start(ctx, m); err != nil {
		panic(err)
	}
	defer func() { _ = bus.Stop(ctx); _ = m.Stop(ctx) }()

	for _, e := range []Tick{{Key: "a", Seq: 1}, {Key: "a", Seq: 2}, {Key: "b", Seq: 1}} {
		if err := broker.Publish("example-ticks", tickMessage(e.Key, "", e.Seq)); err != nil {
			panic(err)
		}
	}
	first := []string{}
	for range 2 {
		e := <-handled
		first = append(first, fmt.Sprintf("%s%d", e.Key, e.Seq))
	}
	slices.Sort(first)
	fmt.Println("at once:", first)
	for clock.Pending() == 0 { // a2 waits on the clock
		runtime.Gosched()
	}
	clock.Advance(time.Second)
	e := <-handled
	fmt.Printf("a second later: %s%d\n", e.Key, e.Seq)
	fmt.Println("throttled:", bus.Stats().Throttled)
	// Output:
	// at once: [a1 b1]
	// a second later: a2
	// throttled: 1
}
