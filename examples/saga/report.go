package main

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// What the run prints: the services' lines as they happen, then what the
// databases hold and the saga's log.

// out is where the services say what they did, a line at a time.
type out struct {
	mu *sync.Mutex
	w  io.Writer
}

func (o out) printf(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, format+"\n", args...)
}

// report prints what the databases hold of the order, and the saga's log.
func report(ctx context.Context, o out, orders, payments service, order Order, sagaID string) error {
	var stock, parcels, charged, refunded int
	if err := orders.db.QueryRowContext(ctx, "SELECT qty FROM stock WHERE sku = 'lamp'").Scan(&stock); err != nil {
		return err
	}
	if err := orders.db.QueryRowContext(ctx, orders.sql.Q("SELECT COUNT(*) FROM shipments WHERE parcel = ?"), fmt.Sprintf("parcel-%d", order.ID)).Scan(&parcels); err != nil {
		return err
	}
	o.printf("orders:   %d lamps in stock, %d shipment", stock, parcels)
	if payments.db != nil {
		if err := payments.db.QueryRowContext(ctx, payments.sql.Q("SELECT COUNT(*), COALESCE(SUM(refunded), 0) FROM payments WHERE payment = ?"), fmt.Sprintf("pay-%d", order.ID)).Scan(&charged, &refunded); err != nil {
			return err
		}
		o.printf("payments: %d payment (%d refunded)", charged, refunded)
	}
	rows, err := orders.db.QueryContext(ctx, orders.sql.Q("SELECT step, action, error FROM fxcqrs_saga_log WHERE saga_id = ? ORDER BY id"), sagaID)
	if err != nil {
		return err
	}
	defer rows.Close()
	o.printf("saga log:")
	for rows.Next() {
		var (
			step           int
			action, reason string
		)
		if err := rows.Scan(&step, &action, &reason); err != nil {
			return err
		}
		if reason == "" {
			reason = "ok"
		}
		o.printf("  step %d %-10s %s", step, action, reason)
	}
	return rows.Err()
}
