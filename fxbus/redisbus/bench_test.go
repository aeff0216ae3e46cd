package redisbus_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/stretchr/testify/require"
)

// BenchmarkConsume compares Flows over one stream (see
// brokertest.BenchConsume). Compare the sub-benchmarks of one run.
func BenchmarkConsume(b *testing.B) {
	brokertest.BenchConsume(b, func(b *testing.B) brokertest.Consume {
		addr := redisAddr(b)
		tp := topic(b, addr)
		ps := pubsubAs(b, addr, "bench", "bench-0")
		require.NoError(b, ps.Provision(context.Background(), tp))
		return brokertest.Consume{Topic: tp, Subscriber: ps, Publish: ps.Publish}
	})
}
