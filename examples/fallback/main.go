// Command fallback shows a dependency going down behind a mediator: a
// price service asks a live provider, which fails; a circuit breaker
// opens after three failures and stops calling it; a cached fallback
// answers meanwhile; after the breaker's open duration a probe finds the
// provider back and the breaker closes.
//
//	go run ./examples/fallback
//
// The breaker's clock is simulated, so that the timeline is the same on
// every run; a service passes none and gets time.Now.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/fx"
)

// GetPrice asks for a symbol's price.
type GetPrice struct{ Symbol string }

// Price is the answer, and where it came from.
type Price struct {
	Cents  int
	Source string
}

var errProviderDown = errors.New("price provider unavailable")

// provider is the live dependency, up or down.
type provider struct {
	mu    sync.Mutex
	down  bool
	calls int
}

func (p *provider) quote(symbol string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.down {
		return 0, errProviderDown
	}
	return 10_000 + len(symbol), nil
}

// LivePrices is the primary handler.
type LivePrices struct{ p *provider }

// Handle asks the provider.
func (h LivePrices) Handle(_ context.Context, q GetPrice) (Price, error) {
	cents, err := h.p.quote(q.Symbol)
	if err != nil {
		return Price{}, err
	}
	return Price{Cents: cents, Source: "live"}, nil
}

// CachedPrices is its fallback: the last known price.
type CachedPrices struct{}

// Handle answers from the cache.
func (CachedPrices) Handle(_ context.Context, q GetPrice) (Price, error) {
	return Price{Cents: 9_999, Source: "cache"}, nil
}

// clock is the breaker's simulated clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// states prints the breaker's transitions as the observer hears them.
type states struct {
	fxcqrs.NopObserver
	w io.Writer
}

func (s states) BreakerStateChanged(_ context.Context, p fxcqrs.BreakerStateChanged) {
	fmt.Fprintf(s.w, "            breaker %s -> %s\n", p.From, p.To)
}

func run(w io.Writer) error {
	p := &provider{}
	clk := &clock{now: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)}
	var m *fxcqrs.Mediator
	app := fx.New(
		fx.NopLogger,
		fxcqrs.Module,
		fx.Supply(p),
		fx.Provide(func() fxcqrs.Observer { return states{w: w} }),
		// snippet:guarded
		fxcqrs.AsMiddleware(func() fxcqrs.Middleware {
			return fxcqrs.Breaker(fxcqrs.BreakerConfig{ConsecutiveFailures: 3, OpenDuration: 30 * time.Second, Now: clk.Now})
		}),
		fxcqrs.AsRequestHandler(func(p *provider) LivePrices { return LivePrices{p: p} }),
		fxcqrs.AsFallback(func() CachedPrices { return CachedPrices{} },
			fxcqrs.FallbackOn(func(err error) bool { return errors.Is(err, errProviderDown) })),
		// end snippet
		fx.Populate(&m),
	)
	if err := app.Start(context.Background()); err != nil {
		return err
	}
	defer app.Stop(context.Background()) //nolint:errcheck // the run's error matters more

	ask := func(at string) error {
		price, err := fxcqrs.Send[Price](context.Background(), m, GetPrice{Symbol: "FXQ"})
		if err != nil {
			return err
		}
		p.mu.Lock()
		calls := p.calls
		p.mu.Unlock()
		fmt.Fprintf(w, "%-10s  %d cents from %s (provider called %d times)\n", at, price.Cents, price.Source, calls)
		return nil
	}
	steps := []struct {
		at   string
		do   func()
		asks int
	}{
		{"up", func() {}, 1},
		{"down", func() { p.mu.Lock(); p.down = true; p.mu.Unlock() }, 5},
		{"+30s", func() { clk.advance(30 * time.Second) }, 1},
		{"back up", func() { p.mu.Lock(); p.down = false; p.mu.Unlock(); clk.advance(30 * time.Second) }, 2},
	}
	for _, s := range steps {
		s.do()
		for range s.asks {
			if err := ask(s.at); err != nil {
				return err
			}
		}
	}
	return nil
}

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fallback:", err)
		os.Exit(1)
	}
}
