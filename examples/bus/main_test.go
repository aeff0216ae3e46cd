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

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The example's timeline over the in-process broker.
func TestBusExample(t *testing.T) {
	b, closeIt := goChannel()
	t.Cleanup(func() { require.NoError(t, closeIt()) })
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, run(ctx, &out, b, ""))
	assert.Equal(t, strings.Join([]string{
		"orders   PlaceOrder 42 handled; OrderPlaced emitted",
		"billing  received OrderPlaced 42 over the broker; charging 120",
		"orders   received PaymentReceived for order 42 over the broker: order paid",
		"         one correlation id across both services: true; caused by the OrderPlaced message: true",
		"done: the order went out and its payment came back, through the broker",
	}, "\n")+"\n", out.String())
}
