package fxoutbox

import (
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// The relay's configuration, handed on from the relay's own package
// (internal/relay), which holds the relay: its loop, lanes and leases,
// the publish, and the durable delivery to this service's mediator
// (whose DeliveryConfig is with the Deliverables, local.go).

// RelayConfig configures the relay: PollInterval (default 1s), BatchSize
// (100), Lease (4s), Lanes and TopicLanes (order per key: 1 lane per
// topic by default), Linger (2ms: how long a busy relay lets commits
// gather into one batch), RetryInitial (100ms) and RetryMax (10s) after a
// broker's refusal, and Undeliverable (which publish errors are the
// message's own). Every field is optional; in JSON and YAML its durations
// may be duration strings ("1s") or nanoseconds.
type RelayConfig = relay.Config

// LaneOf returns the lane among lanes that the rows of key go in: for
// tests and tools that check how keys spread.
func LaneOf(key string, lanes int) int { return schema.LaneOf(key, lanes) }
