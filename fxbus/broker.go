package fxbus

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
)

// What a broker adapter says of itself, and what the bus asks of it.
//
// Any Watermill publisher and subscriber can carry the bus. An adapter
// that implements the interfaces below (the presets natsjs, amqpbus,
// redisbus, kafkabus and the in-process broker do) also states its
// limits, so that a topic or a payload it cannot take fails where it is
// declared or sent, with the rule in the error; makes its topics ahead of
// time; and consumes as many messages at once as a subscription allows.
// The conformance suite (package bustest) checks every statement.

// Capabilities is what a broker adapter states of itself. The
// conformance suite checks each statement instead of skipping a case.
type Capabilities struct {
	// Name names the broker in errors and docs ("nats-jetstream").
	Name string
	// OrderPerKey says that a key's messages reach a subscription with
	// InOrder in the order they were published, and are handled in that
	// order, through a nack, a redelivery and a restart of the consuming
	// process (one consuming process at a time).
	OrderPerKey bool
	// Parallel says that the adapter hands over up to a subscription's
	// InFlight messages before the first of them is acknowledged.
	Parallel bool
	// MaxPayload is the largest payload the adapter publishes, in bytes;
	// 0 when it states none. A larger one fails to publish with an error
	// naming the limit.
	MaxPayload int
	// TopicRule says in words which topic names the broker takes, for
	// errors and docs ("letters, digits, - and _; no dot or space").
	TopicRule string
}

// Broker is an adapter (a publisher, a subscriber, or both) that states
// its capabilities and checks topic names. The bus checks every topic a
// route, a subscription or a dead letter declares when it is made, and
// fx.New fails naming the topic and the rule.
type Broker interface {
	Capabilities() Capabilities
	// CheckTopic returns an error naming topic and the rule when the
	// broker cannot take topic, and nil when it can.
	CheckTopic(topic string) error
}

// Provisioner is an adapter that makes what a topic needs on the broker
// (a stream, a queue, a consumer group) ahead of time. The bus provisions
// every topic its routes, subscriptions and dead letters declare when it
// starts, before it consumes or publishes; an adapter that provisions
// refuses to publish to a topic nobody provisioned, naming it.
type Provisioner interface {
	Provision(ctx context.Context, topics ...string) error
}

// ConsumerProvisioner is a Provisioner whose consuming side needs more
// than its publishing side: a queue of the service's own, say, which a
// service that only publishes to the topic must not leave behind for
// nobody to read. The bus then calls Provision for the topics it
// publishes to (its routes') and ProvisionConsumer for those it consumes
// or keeps (its subscriptions' and their dead letters').
type ConsumerProvisioner interface {
	ProvisionConsumer(ctx context.Context, topics ...string) error
}

// Flow is what a subscription asks of the adapter that consumes for it.
type Flow struct {
	// InFlight bounds the messages handed over and not yet acknowledged
	// or nacked. The adapter holds no more than that from the broker,
	// unless the broker hands out batches: then its doc states its bound
	// (kafkabus holds up to four times InFlight, at least 64, waiting
	// behind their keys or their partition's unhandled offsets).
	InFlight int
	// InOrder says the subscription keeps order per key (see InOrder):
	// an adapter that redelivers must bring a key's nacked message back
	// before the key's later ones.
	InOrder bool
}

// FlowSubscriber is a subscriber that consumes under a Flow. The bus
// subscribes through SubscribeFlow when the subscriber has it, and
// through Subscribe otherwise.
type FlowSubscriber interface {
	SubscribeFlow(ctx context.Context, topic string, flow Flow) (<-chan *message.Message, error)
}
