package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The example over kfake: each customer's orders billed in order.
func TestKafkaExample(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	require.NoError(t, err)
	defer c.Close()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	require.NoError(t, run(ctx, &out, c.ListenAddrs(), "orders.placed.test"))
	cancel() // stops the services
	assert.Equal(t, strings.Join([]string{
		"billing  ada    orders [1 2 3 4 5], in order: true",
		"billing  grace  orders [1 2 3 4 5], in order: true",
		"billing  linus  orders [1 2 3 4 5], in order: true",
		"done: 15 orders over Kafka, each customer's in the order placed",
	}, "\n")+"\n", out.String())
}
