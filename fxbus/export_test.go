package fxbus

import (
	"errors"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
)

// HandlerForTest returns the function that processes topic's messages,
// for the fuzz test to call directly.
func HandlerForTest(b *Bus, topic string, m *fxcqrs.Mediator) message.NoPublishHandlerFunc {
	return b.handler(b.topics[topic], m)
}

// IsMalformed reports whether err sends a message to the dead letter at
// once.
func IsMalformed(err error) bool { return errors.As(err, new(*malformed)) }

// OrderedSubscriber is sub as a topic with InOrder consumes it: at most
// limit in flight, a key's messages one at a time.
func OrderedSubscriber(sub message.Subscriber, limit int) message.Subscriber {
	return subscriber{Subscriber: sub, limit: limit, inFlight: new(atomic.Int64), settled: make(chan struct{}, 1), inOrder: true}
}

// FailuresForTest is how many messages b dead-lettered for a failure, its
// expired ones apart: the count Stats' DeadLettered-Expired must be read
// from in one load, so that it never goes down between two reads.
func FailuresForTest(b *Bus) uint64 { return b.deadLettered.Load() }
