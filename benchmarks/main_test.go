package benchmarks

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Watermill's GoChannel leaves goroutines that finish on their own
	// after Close; they are not fxcqrs's.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/ThreeDotsLabs/watermill/pubsub/gochannel.(*GoChannel).sendMessageToSubscriber"),
	)
}
