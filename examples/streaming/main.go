// Command streaming shows fxcqrs's streaming requests: a stream handler
// yields rows one by one and emits an event for each; the mediator
// processes a row's events (concurrently, up to Config.StreamEvents'
// limit, 10 by default) before the row reaches the consumer, and the
// events emitted after the last row before the stream ends.
//
//	go run ./examples/streaming
//	go run ./examples/streaming -n 5 -sequential
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"iter"
	"os"
	"sync"

	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/fx"
)

type (
	// ExportOrders asks for N order rows.
	ExportOrders struct{ N int }
	// Row is one exported order.
	Row struct {
		ID    int
		Total int
	}
	// RowExported is emitted before each row is yielded.
	RowExported struct{ ID int }
	// ExportFinished is emitted after the last row.
	ExportFinished struct{ Rows int }
)

// printer serialises output from concurrent handlers.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) println(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

type exportHandler struct{}

func (exportHandler) Handle(ctx context.Context, q ExportOrders) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		for id := 1; id <= q.N; id++ {
			fxcqrs.Emit(ctx, RowExported{ID: id})
			if !yield(Row{ID: id, Total: id * 100}, nil) {
				return // the consumer stopped
			}
		}
		fxcqrs.Emit(ctx, ExportFinished{Rows: q.N})
	}
}

type auditRow struct{ p *printer }

func (h auditRow) Handle(_ context.Context, e RowExported) error {
	h.p.println("  event  RowExported{%d} -> audit log", e.ID)
	return nil
}

type countRow struct{ p *printer }

func (h countRow) Handle(_ context.Context, e RowExported) error {
	h.p.println("  event  RowExported{%d} -> export metrics", e.ID)
	return nil
}

type notifyFinished struct{ p *printer }

func (h notifyFinished) Handle(_ context.Context, e ExportFinished) error {
	h.p.println("  event  ExportFinished{%d} -> notify the requester", e.Rows)
	return nil
}

func run(ctx context.Context, w io.Writer, n int, cfg fxcqrs.Config) error {
	p := &printer{w: w}
	var m *fxcqrs.Mediator
	app := fx.New(
		fx.NopLogger,
		fxcqrs.Module,
		fx.Supply(cfg, p),
		fxcqrs.AsStreamHandler(func() exportHandler { return exportHandler{} }),
		fxcqrs.AsEventHandler(func(p *printer) auditRow { return auditRow{p} }),
		fxcqrs.AsEventHandler(func(p *printer) countRow { return countRow{p} }),
		fxcqrs.AsEventHandler(func(p *printer) notifyFinished { return notifyFinished{p} }),
		fx.Populate(&m),
	)
	if err := app.Start(ctx); err != nil {
		return err
	}
	defer app.Stop(ctx) //nolint:errcheck // nothing is in flight after the loop

	for row, err := range fxcqrs.Stream[Row](ctx, m, ExportOrders{N: n}) {
		if err != nil {
			return err
		}
		p.println("item   Row{ID: %d, Total: %d}", row.ID, row.Total)
	}
	p.println("stream ended")
	return nil
}

func main() {
	n := flag.Int("n", 3, "rows to stream")
	sequential := flag.Bool("sequential", false, "process each row's events sequentially")
	flag.Parse()
	cfg := fxcqrs.Config{StreamEvents: fxcqrs.EventConfig{Sequential: *sequential}}
	if err := run(context.Background(), os.Stdout, *n, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "streaming:", err)
		os.Exit(1)
	}
}
