package fxcqrs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

type (
	Quote       struct{ Symbol string }
	Price       struct{ Cents int }
	PriceServed struct{ Source string }
)

// livePrices is the primary: it asks a dependency.
type livePrices struct{ dep *dependency }

func (h *livePrices) Handle(ctx context.Context, q Quote) (Price, error) {
	fxcqrs.Emit(ctx, PriceServed{Source: "live"}) // discarded when it fails
	if err := h.dep.call(); err != nil {
		return Price{}, err
	}
	return Price{Cents: 101}, nil
}

// cachedPrices is its fallback.
type cachedPrices struct{}

func (cachedPrices) Handle(ctx context.Context, q Quote) (Price, error) {
	fxcqrs.Emit(ctx, PriceServed{Source: "cache"})
	return Price{Cents: 100}, nil
}

// A primary that fails with an error the predicate accepts is answered by
// its fallback: the caller gets the fallback's response, the primary's
// events are discarded and the fallback's processed; the observer hears
// which handler answered, and why. Another error is the primary's.
func TestRequestFallback(t *testing.T) {
	t.Parallel()
	dep := &dependency{}
	var sources []string
	var mu sync.Mutex
	obs := &fallbackObserver{}
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithObserver(obs),
		fxcqrs.WithRequestHandlers(&livePrices{dep: dep}),
		fxcqrs.WithFallback(cachedPrices{}, fxcqrs.FallbackOn(func(err error) bool { return errors.Is(err, errUnavailable) })),
		fxcqrs.WithEventHandlers(eventFunc[PriceServed](func(_ context.Context, e PriceServed) error {
			mu.Lock()
			sources = append(sources, e.Source)
			mu.Unlock()
			return nil
		})),
	)
	price, err := fxcqrs.Send[Price](context.Background(), m, Quote{Symbol: "X"})
	require.NoError(t, err)
	assert.Equal(t, Price{Cents: 101}, price)

	dep.down.Store(true)
	price, err = fxcqrs.Send[Price](context.Background(), m, Quote{Symbol: "X"})
	require.NoError(t, err, "the fallback's answer is a normal response")
	assert.Equal(t, Price{Cents: 100}, price)
	mu.Lock()
	assert.Equal(t, []string{"live", "cache"}, sources, "the failed primary's event was discarded")
	mu.Unlock()
	used := obs.last()
	assert.Equal(t, "github.com/fxcqrs/fxcqrs_test.cachedPrices", used.Handler)
	assert.ErrorIs(t, used.Cause, errUnavailable)
}

// A non-matching error is the primary's; the fallback does not run.
func TestFallbackPredicate(t *testing.T) {
	t.Parallel()
	errBadSymbol := errors.New("no such symbol")
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithRequestHandlers(requestFunc[Quote, Price](func(context.Context, Quote) (Price, error) { return Price{}, errBadSymbol })),
		fxcqrs.WithFallback(cachedPrices{}, fxcqrs.FallbackOn(func(err error) bool { return errors.Is(err, errUnavailable) })),
	)
	_, err := fxcqrs.Send[Price](context.Background(), m, Quote{})
	require.ErrorIs(t, err, errBadSymbol)
}

// What never makes a fallback run, whatever its predicate: the caller's
// cancellation, and an *EventError of a call the primary made.
func TestFallbackNeverFor(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var m *fxcqrs.Mediator
	m = newMediator(t, fxcqrs.Config{},
		fxcqrs.WithRequestHandlers(requestFunc[Quote, Price](func(ctx context.Context, q Quote) (Price, error) {
			if q.Symbol == "cancel" {
				cancel()
				return Price{}, ctx.Err()
			}
			return Price{}, fxcqrs.Publish(ctx, m, OrderPlaced{}) // its handler fails
		})),
		fxcqrs.WithFallback(cachedPrices{}),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error { return errors.New("no") })),
	)
	_, err := fxcqrs.Send[Price](ctx, m, Quote{Symbol: "cancel"})
	require.ErrorIs(t, err, context.Canceled)
	_, err = fxcqrs.Send[Price](context.Background(), m, Quote{Symbol: "events"})
	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr, "the primary's own error stands")
}

// An open breaker makes the fallback answer, without calling the primary.
func TestFallbackOnOpenBreaker(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dep := &dependency{}
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithMiddleware(fxcqrs.Breaker(fxcqrs.BreakerConfig{ConsecutiveFailures: 1, Now: clk.Now})),
		fxcqrs.WithRequestHandlers(&livePrices{dep: dep}),
		// The predicate accepts nothing: only the open breaker triggers it.
		fxcqrs.WithFallback(cachedPrices{}, fxcqrs.FallbackOn(func(error) bool { return false })),
	)
	dep.down.Store(true)
	_, err := fxcqrs.Send[Price](context.Background(), m, Quote{})
	require.ErrorIs(t, err, errUnavailable, "the predicate refused; the breaker opened")
	price, err := fxcqrs.Send[Price](context.Background(), m, Quote{})
	require.NoError(t, err)
	assert.Equal(t, Price{Cents: 100}, price)
	assert.Equal(t, int32(1), dep.calls.Load(), "the primary was not called")
}

// Command and event fallbacks; an event fallback that fails too carries
// both errors; a panicking fallback is a *PanicError.
func TestCommandAndEventFallbacks(t *testing.T) {
	t.Parallel()
	errDown := errors.New("mail server down")
	var handled []string
	var mu sync.Mutex
	note := func(s string) { mu.Lock(); handled = append(handled, s); mu.Unlock() }
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithCommandHandlers(commandFunc[PlaceOrder](func(context.Context, PlaceOrder) error { return errDown })),
		fxcqrs.WithFallback(queueOrder{note: note}),
		fxcqrs.WithEventHandlers(&sendMail{}, &sendSMS{}),
		fxcqrs.WithEventFallback[*sendMail](queueMail{note: note}),
		fxcqrs.WithEventFallback[*sendSMS](panickySMS{}),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{ID: 1}))
	err := fxcqrs.Publish(context.Background(), m, Shipped{ID: 2})
	var evErr *fxcqrs.EventError
	require.ErrorAs(t, err, &evErr)
	require.Len(t, evErr.Failures, 1, "the mail fallback answered; the SMS one failed too")
	var fbErr *fxcqrs.FallbackError
	require.ErrorAs(t, evErr.Failures[0].Err, &fbErr)
	assert.ErrorIs(t, fbErr.Primary, errSMSDown)
	var pe *fxcqrs.PanicError
	require.ErrorAs(t, fbErr.Fallback, &pe)
	assert.Equal(t, []string{"queued order 1", "queued mail 2"}, handled)
}

type queueOrder struct{ note func(string) }

func (q queueOrder) Handle(_ context.Context, c PlaceOrder) error {
	q.note("queued order " + itoa(c.ID))
	return nil
}

type (
	sendMail   struct{}
	sendSMS    struct{}
	queueMail  struct{ note func(string) }
	panickySMS struct{}
)

var errSMSDown = errors.New("sms gateway down")

func (*sendMail) Handle(context.Context, Shipped) error { return errors.New("smtp down") }
func (*sendSMS) Handle(context.Context, Shipped) error  { return errSMSDown }
func (q queueMail) Handle(_ context.Context, e Shipped) error {
	q.note("queued mail " + itoa(e.ID))
	return nil
}
func (panickySMS) Handle(context.Context, Shipped) error { panic("no modem") }

func itoa(i int) string { return string(rune('0' + i)) }

// Under limit 1, primaries that fail and the fallbacks that answer for
// them share the primaries' slots: never more than one at once.
func TestFallbacksStayWithinTheLimit(t *testing.T) {
	t.Parallel()
	g := newGauge()
	m := newMediator(t, limit(1),
		fxcqrs.WithEventHandlers(eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error {
			g.enter()
			defer g.leave()
			return errUnavailable
		})),
		fxcqrs.WithEventFallback[eventFunc[OrderPlaced]](eventFunc[OrderPlaced](func(context.Context, OrderPlaced) error {
			g.enter()
			defer g.leave()
			return nil
		})),
	)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, fxcqrs.Publish(context.Background(), m, OrderPlaced{}))
		}()
	}
	wg.Wait()
	_, peak, total := g.snapshot()
	assert.Equal(t, 1, peak)
	assert.Equal(t, 32, total, "16 primaries and 16 fallbacks")
}

// A stream falls back only when its primary fails before its first item.
func TestStreamFallback(t *testing.T) {
	t.Parallel()
	failAt := 0
	var mu sync.Mutex
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithStreamHandlers(streamFunc[ListOrders, OrderRow](func(context.Context, ListOrders) func(func(OrderRow, error) bool) {
			mu.Lock()
			at := failAt
			mu.Unlock()
			return func(yield func(OrderRow, error) bool) {
				for i := 1; i <= 3; i++ {
					if i == at {
						yield(OrderRow{}, errUnavailable)
						return
					}
					if !yield(OrderRow{ID: i}, nil) {
						return
					}
				}
			}
		})),
		fxcqrs.WithFallback(streamFunc[ListOrders, OrderRow](func(context.Context, ListOrders) func(func(OrderRow, error) bool) {
			return func(yield func(OrderRow, error) bool) { yield(OrderRow{ID: 100}, nil) }
		})),
	)
	collect := func() ([]int, error) {
		var ids []int
		var last error
		for row, err := range fxcqrs.Stream[OrderRow](context.Background(), m, ListOrders{}) {
			if err != nil {
				last = err
				continue
			}
			ids = append(ids, row.ID)
		}
		return ids, last
	}
	mu.Lock()
	failAt = 1
	mu.Unlock()
	ids, err := collect()
	require.NoError(t, err)
	assert.Equal(t, []int{100}, ids, "failed before its first item: the fallback's items")

	mu.Lock()
	failAt = 2
	mu.Unlock()
	ids, err = collect()
	require.ErrorIs(t, err, errUnavailable, "after its first item, the error ends the stream")
	assert.Equal(t, []int{1}, ids)
}

// Registration is checked: a fallback needs a handler of its message type
// in the same role with the same response type, and a handler has at most
// one. Under fx too.
func TestFallbackRegistrationErrors(t *testing.T) {
	t.Parallel()
	_, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithRequestHandlers(requestFunc[Quote, Receipt](func(context.Context, Quote) (Receipt, error) { return Receipt{}, nil })),
		fxcqrs.WithFallback(cachedPrices{}),
		fxcqrs.WithFallback(queueOrder{}),
		fxcqrs.WithEventHandlers(&sendMail{}),
		fxcqrs.WithEventFallback[*sendSMS](queueMail{}),
	)
	require.Error(t, err)
	for _, want := range []string{
		"fallback github.com/fxcqrs/fxcqrs_test.cachedPrices: it answers github.com/fxcqrs/fxcqrs_test.Quote with github.com/fxcqrs/fxcqrs_test.Price, but its handler",
		"answers with github.com/fxcqrs/fxcqrs_test.Receipt",
		"fallback github.com/fxcqrs/fxcqrs_test.queueOrder: no handler of github.com/fxcqrs/fxcqrs_test.PlaceOrder to back",
		"no event handler of type *github.com/fxcqrs/fxcqrs_test.sendSMS to back",
	} {
		assert.Contains(t, err.Error(), want)
	}

	_, err = fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithRequestHandlers(&livePrices{dep: &dependency{}}),
		fxcqrs.WithFallback(cachedPrices{}),
		fxcqrs.WithFallback(cachedPrices{}),
	)
	assert.ErrorContains(t, err, "already has a fallback")

	app := fx.New(fx.NopLogger, fxcqrs.Module,
		fxcqrs.AsRequestHandler(func() *livePrices { return &livePrices{dep: &dependency{}} }),
		fxcqrs.AsFallback(func() cachedPrices { return cachedPrices{} }),
		fxcqrs.AsEventHandler(func() *sendMail { return &sendMail{} }),
		fxcqrs.AsEventFallback[*sendMail](func() queueMail { return queueMail{note: func(string) {}} }),
		fx.Invoke(func(*fxcqrs.Mediator) {}),
	)
	require.NoError(t, app.Err())
	assert.ErrorContains(t, fx.New(fx.NopLogger, fxcqrs.Module,
		fxcqrs.AsFallback(func() notAHandler { return notAHandler{} }),
		fx.Invoke(func(*fxcqrs.Mediator) {}),
	).Err(), "has no Handle method of a request, command or stream handler")
}

// Under fx, a fallback answers when the primary's dependency is down.
func TestFallbackUnderFx(t *testing.T) {
	t.Parallel()
	dep := &dependency{}
	dep.down.Store(true)
	var m *fxcqrs.Mediator
	app := fxtest.New(t, fxcqrs.Module,
		fx.Supply(dep),
		fxcqrs.AsRequestHandler(func(d *dependency) *livePrices { return &livePrices{dep: d} }),
		fxcqrs.AsFallback(func() cachedPrices { return cachedPrices{} }),
		fx.Populate(&m),
	)
	app.RequireStart()
	defer app.RequireStop()
	price, err := fxcqrs.Send[Price](context.Background(), m, Quote{})
	require.NoError(t, err)
	assert.Equal(t, Price{Cents: 100}, price)
}

// fallbackObserver keeps the last FallbackUsed a call reported.
type fallbackObserver struct {
	fxcqrs.NopObserver
	mu   sync.Mutex
	used fxcqrs.FallbackUsed
}

func (o *fallbackObserver) CallFinished(_ context.Context, p fxcqrs.CallFinished) {
	o.mu.Lock()
	o.used = p.Fallback
	o.mu.Unlock()
}

func (o *fallbackObserver) last() fxcqrs.FallbackUsed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.used
}

// The fallback runs under the caller's context, not under the deadline a
// Timeout gave the primary, which the primary used up.
func TestFallbackRunsUnderTheCallersContext(t *testing.T) {
	t.Parallel()
	var fallbackDeadline bool
	m := newMediator(t, fxcqrs.Config{},
		fxcqrs.WithMiddleware(fxcqrs.Timeout(fxcqrs.Timeouts{Request: time.Millisecond})),
		fxcqrs.WithRequestHandlers(requestFunc[Quote, Price](func(ctx context.Context, _ Quote) (Price, error) {
			<-ctx.Done() // the slow dependency
			return Price{}, ctx.Err()
		})),
		fxcqrs.WithFallback(requestFunc[Quote, Price](func(ctx context.Context, _ Quote) (Price, error) {
			_, fallbackDeadline = ctx.Deadline()
			return Price{Cents: 1}, ctx.Err()
		})),
	)
	price, err := fxcqrs.Send[Price](context.Background(), m, Quote{})
	require.NoError(t, err, "the primary's deadline is not the fallback's")
	assert.Equal(t, Price{Cents: 1}, price)
	assert.False(t, fallbackDeadline)
}
