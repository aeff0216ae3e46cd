// Command orders runs python-cqrs's "Parallel Event Processing" scenario
// on fxcqrs: a command handler processes an order and emits four events;
// the mediator runs their handlers under a concurrency limit and returns
// only when all four are done. It prints a timeline of what ran when.
//
//	go run ./examples/orders              # limit 3: three at once, one waits
//	go run ./examples/orders -max 1       # one at a time
//	go run ./examples/orders -sequential  # on the caller's goroutine
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/fx"
)

// The command and its four events.
type (
	ProcessOrder struct {
		ID   int
		Item string
		Qty  int
	}
	OrderProcessed   struct{ ID int }
	InventoryUpdated struct {
		Item string
		Qty  int
	}
	AuditLogged           struct{ ID int }
	NotificationRequested struct{ ID int }
)

// timeline prints what happens, with times relative to the start and the
// number of event handlers running.
type timeline struct {
	mu      sync.Mutex
	w       io.Writer
	start   time.Time
	limit   string
	running int
	peak    int
	emitted time.Time
}

func (t *timeline) printf(format string, args ...any) {
	fmt.Fprintf(t.w, "%+6dms  ", time.Since(t.start).Milliseconds())
	fmt.Fprintf(t.w, format+"\n", args...)
}

func (t *timeline) emitted4() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.emitted = time.Now()
	t.printf("command  ProcessOrder handled, 4 events emitted")
}

func (t *timeline) started(handler string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.running++
	t.peak = max(t.peak, t.running)
	t.printf("start    %-22s running %d/%s  (waited %dms for a slot)", handler, t.running, t.limit, time.Since(t.emitted).Milliseconds())
}

func (t *timeline) finished(handler string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.running--
	t.printf("done     %-22s running %d/%s", handler, t.running, t.limit)
}

// work simulates a handler's I/O; the test replaces it.
type work func(ctx context.Context, handler string)

// processOrderHandler handles the command and emits the four events.
type processOrderHandler struct{ tl *timeline }

func (h *processOrderHandler) Handle(ctx context.Context, cmd ProcessOrder) error {
	fxcqrs.Emit(ctx, OrderProcessed{ID: cmd.ID})
	fxcqrs.Emit(ctx, InventoryUpdated{Item: cmd.Item, Qty: cmd.Qty})
	fxcqrs.Emit(ctx, AuditLogged{ID: cmd.ID})
	fxcqrs.Emit(ctx, NotificationRequested{ID: cmd.ID})
	h.tl.emitted4()
	return nil
}

// eventHandler is one of the four event handlers: it records itself on the
// timeline around its simulated work.
type eventHandler[E any] struct {
	name string
	tl   *timeline
	work work
}

func (h *eventHandler[E]) Handle(ctx context.Context, _ E) error {
	h.tl.started(h.name)
	defer h.tl.finished(h.name)
	h.work(ctx, h.name)
	return nil
}

func newEventHandler[E any](name string) func(*timeline, work) *eventHandler[E] {
	return func(tl *timeline, w work) *eventHandler[E] {
		return &eventHandler[E]{name: name, tl: tl, work: w}
	}
}

// sleep is the simulated I/O of each handler.
func sleep(durations map[string]time.Duration) work {
	return func(ctx context.Context, handler string) {
		select {
		case <-time.After(durations[handler]):
		case <-ctx.Done():
		}
	}
}

func run(ctx context.Context, w io.Writer, cfg fxcqrs.Config, doWork work) error {
	if err := cfg.Validate(); err != nil {
		return err // before anything is printed about the configuration
	}
	tl := &timeline{w: w, start: time.Now(), limit: "1"}
	mode := "concurrent"
	switch {
	case cfg.Events.Sequential:
		mode, tl.limit = "sequential", "-"
	case cfg.Events.MaxConcurrentHandlers > 0:
		tl.limit = fmt.Sprint(cfg.Events.MaxConcurrentHandlers)
	}
	fmt.Fprintf(w, "fxcqrs orders example: 4 event handlers, %s, limit %s\n", mode, tl.limit)

	var m *fxcqrs.Mediator
	app := fx.New(
		fx.NopLogger,
		fxcqrs.Module,
		fx.Supply(cfg, tl, doWork),
		fxcqrs.AsCommandHandler(func(tl *timeline) *processOrderHandler { return &processOrderHandler{tl: tl} }),
		fxcqrs.AsEventHandler(newEventHandler[OrderProcessed]("UpdateOrderView")),
		fxcqrs.AsEventHandler(newEventHandler[InventoryUpdated]("ReserveStock")),
		fxcqrs.AsEventHandler(newEventHandler[AuditLogged]("WriteAuditLog")),
		fxcqrs.AsEventHandler(newEventHandler[NotificationRequested]("SendConfirmationEmail")),
		fx.Populate(&m),
	)
	if err := app.Start(ctx); err != nil {
		return err
	}
	err := fxcqrs.Exec(ctx, m, ProcessOrder{ID: 42, Item: "keyboard", Qty: 2})
	tl.mu.Lock()
	tl.printf("response ProcessOrder returned (err: %v) after all 4 events", err)
	fmt.Fprintf(w, "peak: %d event handlers at once\n", tl.peak)
	tl.mu.Unlock()
	if stopErr := app.Stop(ctx); err == nil {
		err = stopErr
	}
	return err
}

func main() {
	maxHandlers := flag.Int("max", 3, "MaxConcurrentHandlers for events")
	sequential := flag.Bool("sequential", false, "process events sequentially on the caller's goroutine")
	flag.Parse()

	cfg := fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: *sequential}}
	if !*sequential {
		cfg.Events.MaxConcurrentHandlers = *maxHandlers
	}
	durations := map[string]time.Duration{
		"UpdateOrderView":       200 * time.Millisecond,
		"ReserveStock":          150 * time.Millisecond,
		"WriteAuditLog":         100 * time.Millisecond,
		"SendConfirmationEmail": 120 * time.Millisecond,
	}
	if err := run(context.Background(), os.Stdout, cfg, sleep(durations)); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}
