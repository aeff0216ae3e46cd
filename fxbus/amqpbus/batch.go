package amqpbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// batchChannel is what PublishBatch publishes on: a connection of its own
// and one channel in confirm mode, opened on first use and opened again
// after a failure. watermill-amqp waits for each confirm before it sends
// the next message; a batch sends them all, then waits.
type batchChannel struct {
	mu       sync.Mutex
	url      string
	conn     *amqp.Connection
	ch       *amqp.Channel
	declared map[string]bool // exchanges this channel declared
}

// confirmWait bounds how long a batch waits for RabbitMQ's confirms.
const confirmWait = 30 * time.Second

// PublishBatch publishes msgs to topic's exchange, in order, each with a
// publisher confirm, without waiting on one before sending the next; it
// returns how many, from the first, RabbitMQ confirmed: what a relay may
// delete (fxbus.BatchPublisher). The messages are those Publish sends,
// persistent, in watermill-amqp's format, so its subscribers read them.
func (p *PubSub) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	b := &p.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), confirmWait)
	defer cancel()
	ch, err := b.channel(topic)
	if err != nil {
		return 0, fmt.Errorf("amqpbus: publish to %s: %w", topic, err)
	}
	var (
		confirms []*amqp.DeferredConfirmation
		sendErr  error
	)
	for _, msg := range msgs {
		pub, err := wamqp.DefaultMarshaler{}.Marshal(msg)
		if err != nil {
			sendErr = err
			break
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, topic, "", false, false, pub)
		if err != nil {
			sendErr = err
			break
		}
		confirms = append(confirms, dc)
	}
	acked, firstErr := 0, error(nil)
	for _, dc := range confirms { // every confirm is waited for
		ok, err := dc.WaitContext(ctx)
		switch {
		case firstErr != nil:
		case err != nil:
			firstErr = err
		case !ok:
			firstErr = errors.New("RabbitMQ refused the message (nack)")
		default:
			acked++
		}
	}
	if firstErr == nil {
		firstErr = sendErr
	}
	if firstErr != nil {
		b.reset() // the channel may be closed: open another next time
		return acked, fmt.Errorf("amqpbus: publish to %s: %w", topic, firstErr)
	}
	return acked, nil
}

// channel returns the confirm-mode channel, topic's exchange declared.
func (b *batchChannel) channel(topic string) (*amqp.Channel, error) {
	if b.ch == nil || b.ch.IsClosed() {
		b.reset()
		conn, err := amqp.Dial(b.url)
		if err != nil {
			return nil, err
		}
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		b.conn, b.ch, b.declared = conn, ch, map[string]bool{}
	}
	if !b.declared[topic] {
		// As watermill-amqp's durable pub/sub declares it.
		if err := b.ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
			b.reset()
			return nil, err
		}
		b.declared[topic] = true
	}
	return b.ch, nil
}

// reset closes the connection, if any.
func (b *batchChannel) reset() {
	if b.conn != nil {
		_ = b.conn.Close()
	}
	b.conn, b.ch = nil, nil
}

func (b *batchChannel) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reset()
}
