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

// marshaler writes and reads messages as watermill-amqp did: the payload
// as the body, the metadata as headers, the id in the
// _watermill_message_uuid header, persistent. Messages published by
// earlier versions (on watermill-amqp) are read as they were. A
// content-type metadata (a CloudEvent's datacontenttype, see
// fxbus.CloudEventsAMQP) is the message's content-type property too.
var marshaler = wamqp.DefaultMarshaler{PostprocessPublishing: func(p amqp.Publishing) amqp.Publishing {
	p.ContentType, _ = p.Headers[contentTypeMetadata].(string)
	return p
}}

// contentTypeMetadata is the metadata key of the AMQP content-type property.
const contentTypeMetadata = "content-type"

// publisher publishes on a pool of confirm-mode channels of a connection
// of its own (a publisher that RabbitMQ slows down by flow control does
// not slow the consumers), opened on first use and again after a failure.
type publisher struct {
	cfg        Config
	maxPayload int
	pool       chan *pubChannel
	known      sync.Map // exchanges that exist: topics', lanes'

	mu     sync.Mutex
	conn   *amqp.Connection
	closed bool
}

type pubChannel struct{ ch *amqp.Channel }

func newPublisher(cfg Config, channels, maxPayload int) *publisher {
	p := &publisher{cfg: cfg, maxPayload: maxPayload, pool: make(chan *pubChannel, channels)}
	for range channels {
		p.pool <- &pubChannel{}
	}
	return p
}

// confirmWait bounds how long a publish waits for RabbitMQ's confirms
// of a batch, beside a second per MiB it carries.
const confirmWait = 30 * time.Second

// Publish publishes msgs to topic's exchange, in order, each confirmed by
// RabbitMQ. A topic whose exchange does not exist (nobody provisioned
// it) fails, naming it: RabbitMQ would drop the messages.
func (p *PubSub) Publish(topic string, msgs ...*message.Message) error {
	_, err := p.pub.publish(topic, msgs)
	return err
}

// PublishBatch publishes msgs to topic's exchange, in order, each with a
// publisher confirm, without waiting on one before sending the next; it
// returns how many, from the first, RabbitMQ confirmed: what a relay may
// delete (fxbus.BatchPublisher).
func (p *PubSub) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	return p.pub.publish(topic, msgs)
}

// ErrNotProvisioned is returned (wrapped, naming the topic) by a publish
// to a topic whose exchange does not exist.
var ErrNotProvisioned = errors.New("the topic is not provisioned (no exchange of its name: Provision declares it)")

func (p *publisher) publish(topic string, msgs []*message.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	size := 0
	for _, msg := range msgs {
		n := len(msg.Payload) + len(msg.UUID)
		for k, v := range msg.Metadata {
			n += len(k) + len(v)
		}
		if n > p.maxPayload {
			return 0, fmt.Errorf("amqpbus: publish to %s: message %s has %d bytes, above the server's max_message_size of %d (Config.MaxPayload)", topic, msg.UUID, n, p.maxPayload)
		}
		size += n
	}
	pc := <-p.pool
	defer func() { p.pool <- pc }()
	ctx, cancel := context.WithTimeout(msgs[0].Context(), confirmWait+time.Duration(size>>20)*time.Second)
	defer cancel()
	exchanges := make([]string, len(msgs)) // each message's: its lane's
	for i, msg := range msgs {
		exchanges[i] = p.cfg.exchangeOf(topic, msg)
		if err := p.open(pc, exchanges[i]); err != nil {
			return 0, fmt.Errorf("amqpbus: publish to %s: %w", topic, err)
		}
	}
	var (
		confirms []*amqp.DeferredConfirmation
		sendErr  error
	)
	for i, msg := range msgs {
		pub, err := marshaler.Marshal(msg)
		if err != nil {
			sendErr = err
			break
		}
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchanges[i], "", false, false, pub)
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
		p.drop(pc) // the channel may be closed, or owe confirms: open another next time
		return acked, fmt.Errorf("amqpbus: publish to %s: %w", topic, firstErr)
	}
	return acked, nil
}

// open makes pc a confirm-mode channel and checks that the exchange
// exists (once per exchange and process): a topic's, or a lane's.
func (p *publisher) open(pc *pubChannel, topic string) error {
	if pc.ch == nil || pc.ch.IsClosed() {
		conn, err := p.connection()
		if err != nil {
			return err
		}
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			return err
		}
		pc.ch = ch
	}
	if _, ok := p.known.Load(topic); ok {
		return nil
	}
	err := pc.ch.ExchangeDeclarePassive(topic, "fanout", true, false, false, false, nil)
	if err != nil {
		p.drop(pc) // a failed passive declare closes the channel
		var aerr *amqp.Error
		if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
			return fmt.Errorf("%w: %w", ErrNotProvisioned, err)
		}
		return err
	}
	p.known.Store(topic, true)
	return nil
}

func (p *publisher) connection() (*amqp.Connection, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("the PubSub is closed")
	}
	if p.conn == nil || p.conn.IsClosed() {
		conn, err := p.cfg.dial(p.cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("RabbitMQ at %s cannot be reached: %w", redacted(p.cfg.URL), err)
		}
		p.conn = conn
	}
	return p.conn, nil
}

func (p *publisher) drop(pc *pubChannel) {
	if pc.ch != nil {
		_ = pc.ch.Close()
	}
	pc.ch = nil
}

// close closes the channels and the connection, once every publish under
// way has returned its channel.
func (p *publisher) close() error {
	for range cap(p.pool) {
		p.drop(<-p.pool)
	}
	for range cap(p.pool) {
		p.pool <- &pubChannel{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var err error
	if p.conn != nil && !p.conn.IsClosed() {
		err = p.conn.Close()
	}
	p.conn = nil
	if errors.Is(err, amqp.ErrClosed) {
		return nil
	}
	return err
}
