package fxbus

import (
	"errors"

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
