// Package amqptest helps tests of code that uses amqpbus: it deletes what
// a test's topic made on RabbitMQ, so that each test owns its topics and
// leaves none behind.
package amqptest

import (
	"errors"
	"fmt"

	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus/internal/names"
	amqp "github.com/rabbitmq/amqp091-go"
)

// DeleteTopic deletes, on the RabbitMQ at url, topic's exchanges and
// group's queues of its lanes (lanes 1 for a topic without lanes), and
// the queue that records its number of lanes: the names amqpbus gives
// them. A name that does not exist is no error.
//
//	t.Cleanup(func() { require.NoError(t, amqptest.DeleteTopic(url, topic, "billing", 8)) })
func DeleteTopic(url, topic, group string, lanes int) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("amqptest: delete topic %s: %w", topic, err)
	}
	defer conn.Close() //nolint:errcheck // the deletes' errors are what counts
	var errs []error
	// A refused delete closes its channel: each runs on one of its own.
	del := func(f func(*amqp.Channel) error) {
		ch, err := conn.Channel()
		if err != nil {
			errs = append(errs, err)
			return
		}
		defer ch.Close() //nolint:errcheck // closed by the server after a refusal
		errs = append(errs, f(ch))
	}
	del(func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(names.LanesQueue(topic), false, false, false)
		return err
	})
	for n := range max(lanes, 1) {
		ex := names.LaneExchange(topic, n)
		del(func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(ex+names.QueueSuffix(group), false, false, false)
			return err
		})
		del(func(ch *amqp.Channel) error { return ch.ExchangeDelete(ex, false, false) })
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("amqptest: delete topic %s: %w", topic, err)
	}
	return nil
}
