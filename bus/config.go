package fxbus

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"go.uber.org/zap"
)

// Config is what a Bus is made of. Every field is optional.
type Config struct {
	// Publisher publishes routed events and dead letters: any Watermill
	// publisher (NATS JetStream, RabbitMQ, Kafka, Redis Streams, SQL).
	// Required when there are routes or subscriptions, unless Subscriber
	// is nil too: then both are an in-process GoChannel.
	Publisher message.Publisher
	// Subscriber consumes the subscribed topics. Required when there are
	// subscriptions, with the same exception.
	Subscriber message.Subscriber
	// Logger logs, Watermill's router included. Default: none.
	Logger *zap.Logger
	// Marshaler encodes events. Default: JSON.
	Marshaler Marshaler
	// Embedded configures the in-process GoChannel used when neither
	// Publisher nor Subscriber is given. Default: a buffer of 64 messages,
	// not persistent, publishing without waiting for an acknowledgement.
	Embedded Embedded
}

// Embedded is the in-process broker's configuration: Watermill's
// GoChannel's. Under fx, [Module] takes one from the graph, optionally. A
// relay that deletes what it published once Publish returns needs
// Persistent (a message published before its subscriber subscribed is
// kept) and BlockPublishUntilSubscriberAck.
type Embedded gochannel.Config
