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

// The timeline on the embedded defaults: committed together, relayed,
// delivered, handled once though delivered twice.
func TestOutboxExample(t *testing.T) {
	st, err := sqliteSetup()
	require.NoError(t, err)
	t.Cleanup(st.close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, st, nil))
	assert.Equal(t, strings.Join([]string{
		"orders   PlaceOrder 42: the order and OrderPlaced written in one transaction",
		"billing  OrderPlaced 42 delivered; charged 1999 cents in the inbox's transaction",
		"orders   the relay sent it: 0 rows left in the outbox",
		"billing  the same message again: skipped by the inbox; 1 charge in all",
	}, "\n")+"\n", out.String())
}

// With -otel: the trace of the command goes through its outbox row and
// the broker into billing's handler.
func TestOutboxExampleTraced(t *testing.T) {
	st, err := sqliteSetup()
	require.NoError(t, err)
	t.Cleanup(st.close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, st, newTracing()))
	assert.Equal(t, strings.Join([]string{
		"orders   PlaceOrder 42: the order and OrderPlaced written in one transaction",
		"billing  OrderPlaced 42 delivered; charged 1999 cents in the inbox's transaction",
		"orders   the relay sent it: 0 rows left in the outbox",
		"billing  the same message again: skipped by the inbox; 1 charge in all",
		"trace of PlaceOrder 42, one across both services:",
		"  command outbox.PlaceOrder (internal)",
		"    create orders (producer)",
		"      process orders (consumer)",
		"        publish outbox.OrderPlaced (internal)",
		"          event outbox.OrderPlaced -> outbox.eventFunc[outbox.OrderPlaced] (internal)",
		"  the relay's send orders (producer): a trace of its own, linked to the message",
	}, "\n")+"\n", out.String())
}
