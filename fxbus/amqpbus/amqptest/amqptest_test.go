package amqptest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus/amqptest"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// DeleteTopic closes the connections it opens.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// DeleteTopic leaves none of a topic's exchanges and queues behind, lanes
// and all, and deleting again is no error.
func TestDeleteTopic(t *testing.T) {
	url := brokertest.Address(t, "FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	probe, err := amqp.Dial(url)
	require.NoError(t, err)
	defer probe.Close()
	topic := fmt.Sprintf("amqptest_%d", rand.Uint64())
	ps, err := amqpbus.New(amqpbus.Config{URL: url, Group: "billing", Lanes: 3, Leases: ownership.NewMemory()})
	require.NoError(t, err)
	require.NoError(t, ps.ProvisionConsumer(context.Background(), topic))
	require.NoError(t, ps.Close())
	made := []string{topic + "._lanes", topic + "_billing", topic + "._lane.1_billing", topic + "._lane.2_billing"}
	for _, q := range made {
		require.True(t, queueExists(t, probe, q), "provisioned: %s", q)
	}

	require.NoError(t, amqptest.DeleteTopic(url, topic, "billing", 3))
	for _, q := range made {
		require.False(t, queueExists(t, probe, q), "deleted: %s", q)
	}
	for _, ex := range []string{topic, topic + "._lane.1", topic + "._lane.2"} {
		require.False(t, exchangeExists(t, probe, ex), "deleted: %s", ex)
	}
	require.NoError(t, amqptest.DeleteTopic(url, topic, "billing", 3), "deleted again")
}

func queueExists(t *testing.T, conn *amqp.Connection, name string) bool {
	t.Helper()
	ch, err := conn.Channel()
	require.NoError(t, err)
	defer ch.Close()
	_, err = ch.QueueDeclarePassive(name, false, false, false, false, nil)
	return err == nil
}

func exchangeExists(t *testing.T, conn *amqp.Connection, name string) bool {
	t.Helper()
	ch, err := conn.Channel()
	require.NoError(t, err)
	defer ch.Close()
	return ch.ExchangeDeclarePassive(name, "fanout", true, false, false, false, nil) == nil
}
