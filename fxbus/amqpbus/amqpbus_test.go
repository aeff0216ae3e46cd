package amqpbus_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// amqpURL is the RabbitMQ server the tests use (see brokertest.Address).
func amqpURL(t testing.TB) string {
	return brokertest.Address(t, "FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
}

// topic is an exchange of the test's own; it and group's queue are
// deleted when the test ends.
func topic(t testing.TB, addr, group string) string {
	t.Helper()
	tp := fmt.Sprintf("amqpbus_%d", rand.Uint64())
	t.Cleanup(func() {
		conn, err := amqp.Dial(addr)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(tp+"_"+group, false, false, false)
			_ = ch.ExchangeDelete(tp, false, false)
			_ = ch.Close()
		}
	})
	return tp
}

func next(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(time.Minute):
		t.Fatal("no message within a minute")
		return nil
	}
}

// An unreachable server fails New, naming it without its password.
func TestUnreachableFailsNew(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := "amqp://guest:secret@" + l.Addr().String() + "/"
	require.NoError(t, l.Close())
	_, err = amqpbus.New(amqpbus.Config{URL: addr, Group: "billing"})
	require.ErrorContains(t, err, "RabbitMQ at amqp://guest:xxxxx@"+l.Addr().String()+"/ cannot be reached")
	assert.NotContains(t, err.Error(), "secret")
}
