package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

func runExample(t *testing.T, refuse bool) string {
	t.Helper()
	db, err := openDB(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, db, refuse))
	return out.String()
}

func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// Each step commits with its writes: the order is reserved, charged,
// shipped.
func TestSagaCompletes(t *testing.T) {
	assert.Equal(t, lines(
		"saga order 7: reserve stock, charge card, book courier",
		"  act  reserve stock: one lamp",
		"  act  charge card: 1999 cents (pay-7)",
		"  act  book courier: parcel-7",
		"COMPLETED: payment pay-7, shipment parcel-7",
		"database: 2 lamps in stock, 1 payment (0 refunded), 1 shipment",
		"saga log:",
		"  step 0 act        ok",
		"  step 1 act        ok",
		"  step 2 act        ok",
	), runExample(t, false))
}

// The courier refuses: its step's writes roll back, the charge is
// refunded (its compensating event handled) and the stock released, in
// that order, and the log says so.
func TestSagaCompensates(t *testing.T) {
	assert.Equal(t, lines(
		"saga order 7: reserve stock, charge card, book courier",
		"  act  reserve stock: one lamp",
		"  act  charge card: 1999 cents (pay-7)",
		"  act  book courier: refused",
		"  undo charge card: 1999 cents refunded",
		"  event CardRefunded: customer of order 7 told of the 1999 cents refund",
		"  undo reserve stock: one lamp back",
		"COMPENSATED: step BookCourier failed (no courier today)",
		"database: 3 lamps in stock, 1 payment (1 refunded), 0 shipment",
		"saga log:",
		"  step 0 act        ok",
		"  step 1 act        ok",
		"  step 2 act        no courier today",
		"  step 1 compensate ok",
		"  step 0 compensate ok",
	), runExample(t, true))
}

// The -mermaid flag's diagram, which the README shows: a change to the
// saga or to the renderer shows here first.
func TestMermaid(t *testing.T) {
	d := NewOrderSaga(nil, nil, nil).Mermaid()
	assert.True(t, strings.HasPrefix(d, "flowchart TD\n"), d)
	for _, edge := range []string{"act0 --> act1", "act1 --> act2", "act2 -. fails .-> comp1", "comp1 --> comp0", "act0 -. fails .-> compensated"} {
		assert.Contains(t, d, edge)
	}
}
