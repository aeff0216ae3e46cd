package relay

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs/internal/confdecode"
)

// Config configures the relay (fxoutbox.RelayConfig). Every field is
// optional.
type Config struct {
	// PollInterval is how often the relay looks for rows that no commit
	// in this process announced: rows of other processes, and of a
	// process that crashed. Default 1s. A commit in this process wakes it
	// at once.
	PollInterval time.Duration `json:"pollInterval" yaml:"pollInterval"`
	// BatchSize is how many rows of a topic one batch reads: they are
	// published in id order, as one batch when the bus's publisher is an
	// fxbus.BatchPublisher (NATS JetStream through natsjs), else one by
	// one, and the ones the broker took are deleted in one statement.
	// Default 100.
	BatchSize int `json:"batchSize" yaml:"batchSize"`
	// ProgressInterval is how long a lane's published rows may wait
	// before the relay records its progress by deleting them: published
	// rows are kept in memory (the relay skips them when it reads the
	// lane, and never sends them again itself) and deleted in one statement, fenced
	// by the lane's lease, once the oldest has waited ProgressInterval or
	// ProgressRows are waiting, when the relay gives the lane back or
	// stops. One delete per window instead of one per batch: at low load
	// the relay's commits no longer double the database's WAL flushes.
	// The price is the duplicate bound after a kill: what a relay had
	// published and not yet deleted is published again by the next relay,
	// up to ProgressRows + BatchSize - 1 rows per lane, published within
	// the last ProgressInterval (plus the time one batch takes). JetStream
	// drops such copies by message id within its duplicate window (2
	// minutes by default); the inbox makes any copy harmless. It does not
	// delay delivery. The delivery topic's rows (durable events,
	// scheduled commands) are deleted as they are delivered. Default
	// 100ms, at most a quarter of Lease; negative deletes every batch as
	// soon as it is published (the bound is then BatchSize).
	ProgressInterval time.Duration `json:"progressInterval" yaml:"progressInterval"`
	// Linger is how long a busy relay lets commits gather into one batch:
	// after a pass that sent rows, a commit's wake starts the next pass
	// only once Linger has passed since that pass began. Each pass costs
	// a read of the outbox and a round trip to the broker whatever it
	// sends; without it, at a few hundred to a few thousand commands a
	// second each commit woke a pass of its own for a batch of one or two
	// rows, which cost the database and the broker nearly as much CPU as
	// the commands did. A relay that was idle (its last pass sent
	// nothing) starts at once: at low load a row waits for no one. At most
	// Linger is added to a row's delivery under load, Linger/2 on average.
	// Default 2ms; negative passes at every wake, as before.
	Linger time.Duration `json:"linger" yaml:"linger"`
	// ProgressRows is how many published rows of a lane make the relay
	// record its progress before ProgressInterval has passed. Default
	// 1000.
	ProgressRows int `json:"progressRows" yaml:"progressRows"`
	// Lease is how long a relay owns a topic's lane (a topic nobody keys
	// is one lane) without renewing it; it renews it before each batch,
	// at most once per quarter lease. A relay that dies leaves its lanes to
	// the others (or to its own restart) once it expires: with the
	// defaults, delivery resumes within Lease + PollInterval, 5s. Default
	// 4s.
	Lease time.Duration `json:"lease" yaml:"lease"`
	// Lanes is how many lanes a topic's keyed rows are spread over
	// (fxbus.KeyBy gives a route's events their keys), unless TopicLanes
	// says otherwise. Each lane is sent in order under a lease of its
	// own, so that the rows of one key keep their order while the relays
	// of several replicas share the topic's lanes, each its fair part.
	// Rows without a key go in lane 0 and keep their topic's order.
	// Default 1: the topic is one lane, sent by one relay at a time.
	//
	// A key's lane is a hash of the key modulo the number of lanes: to
	// change the number of a topic with rows of it waiting would put a
	// key's new rows in another lane than its old ones, which could then
	// overtake them. Change it on a drained topic: stop writing to it (or
	// run the new number only once Admin.Backlog shows none of its rows
	// waiting), then deploy the new number everywhere.
	Lanes int `json:"lanes" yaml:"lanes"`
	// StoreTimeout bounds the steps of the relay's turn in a store (a
	// tenant's, or the outbox's own database) that wait on the database
	// alone: the listing of its topics and lanes, the renewal of a lane's
	// lease before each batch, the recording of its progress, and the
	// ping after a failure each run under a deadline that long, on the
	// wall clock; so do the relay's read of the tenant source
	// (Config.TenantStores) and the bus's read of each tenant store's
	// parked keys (fxbus.InOrder). A store whose database hangs (a lock
	// held on its outbox, a server that stopped answering without closing the
	// connection) fails its turn when a step's deadline passes, gives up
	// the rest of the turn, and waits for a backoff of its own
	// (RetryInitial up to RetryMax) while the relay serves the other
	// stores; without a deadline one hung tenant stalled every tenant's
	// delivery. Default Lease, and at most Lease: a step that hangs past
	// the lease has lost its lane anyway (another relay may send it now),
	// and nothing is gained by waiting longer. Within a batch, each
	// statement (the read of its rows, the delete after the publish, a
	// dead letter's move) has a deadline of its own, so a database that
	// hangs in the middle of a batch ends the store's turn too, the rows
	// published and not deleted kept as the lane's progress (on the
	// delivery topic, delivered again once the store answers); the broker's
	// publish between them is not bounded (a broker that is away holds it
	// for its own timeout), nor are the delivery topic's handlers.
	// Negative: no deadline.
	StoreTimeout time.Duration `json:"storeTimeout" yaml:"storeTimeout"`
	// TopicLanes sets the number of lanes of some topics, by topic; the
	// others have Lanes. Each must be at least 1.
	TopicLanes map[string]int `json:"topicLanes" yaml:"topicLanes"`
	// RetryInitial is the first wait after the broker refused. Default
	// 100ms; it doubles up to RetryMax.
	RetryInitial time.Duration `json:"retryInitial" yaml:"retryInitial"`
	// RetryMax bounds the wait between tries. Default 10s.
	RetryMax time.Duration `json:"retryMax" yaml:"retryMax"`
	// Undeliverable says whether a publish error is the message's own (it
	// is too large, the broker refuses it as invalid): such a row goes to
	// the dead letter table, with an error log. Default: none is; every
	// error is the broker's or the connection's, retried forever while
	// rows wait.
	Undeliverable func(error) bool `json:"-" yaml:"-"`
}

// WithDefaults is c with the defaults for its zero fields. A function,
// not a method: fxoutbox.RelayConfig hands Config on, whose method set
// users see.
func WithDefaults(c Config) Config {
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 100 * time.Millisecond
	}
	if c.Linger == 0 {
		c.Linger = 2 * time.Millisecond
	}
	if c.ProgressRows <= 0 {
		c.ProgressRows = 1000
	}
	if c.Lease <= 0 {
		c.Lease = 4 * time.Second
	}
	if c.ProgressInterval > c.Lease/4 {
		c.ProgressInterval = c.Lease / 4 // recorded while the lease that fences it runs
	}
	if c.StoreTimeout == 0 || c.StoreTimeout > c.Lease {
		c.StoreTimeout = c.Lease // a step does not outlive the lease it renewed
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = 100 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 10 * time.Second
	}
	if c.Undeliverable == nil {
		c.Undeliverable = func(error) bool { return false }
	}
	return c
}

// UnmarshalJSON decodes a RelayConfig; its durations may be duration
// strings ("1s") or nanoseconds.
func (c *Config) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, confdecode.Shadow(c)) }

// UnmarshalYAML decodes a RelayConfig; its durations may be duration
// strings (1s) or nanoseconds.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(confdecode.Shadow(c))
}

// LanesOf is how many lanes topic's keyed rows are spread over under c.
func LanesOf(c Config, topic string) int {
	if n, ok := c.TopicLanes[topic]; ok && n > 0 {
		return n
	}
	if c.Lanes > 0 {
		return c.Lanes
	}
	return 1
}

// ValidateLanes checks c's numbers of lanes.
func ValidateLanes(c Config) error {
	if c.Lanes < 0 {
		return fmt.Errorf("fxoutbox: Relay.Lanes must not be negative: got %d", c.Lanes)
	}
	for topic, n := range c.TopicLanes {
		if n < 1 {
			return fmt.Errorf("fxoutbox: Relay.TopicLanes[%q] must be at least 1: got %d", topic, n)
		}
	}
	return nil
}

// DeliveryConfig configures durable in-process delivery and scheduled
// commands. Every field is optional.
type DeliveryConfig struct {
	// Topic is the outbox topic of the rows this service delivers to
	// itself. Default "fxcqrs.local". Services that share one outbox
	// table must each set their own: a relay delivers the Topic's rows to
	// its own mediator.
	Topic string `json:"topic" yaml:"topic"`
	// MaxAttempts is how many times a row is delivered before it goes to
	// the dead letter table with its last error. Default 5.
	MaxAttempts int `json:"maxAttempts" yaml:"maxAttempts"`
	// RetryInitial is the wait, by the outbox's clock, before a failed
	// row's second attempt; it doubles per attempt up to RetryMax.
	// Default 1s. A retried row waits at least until the relay's next
	// poll.
	RetryInitial time.Duration `json:"retryInitial" yaml:"retryInitial"`
	// RetryMax bounds the wait between attempts. Default 5m.
	RetryMax time.Duration `json:"retryMax" yaml:"retryMax"`
	// Concurrency is how many rows are delivered at once (a row committed
	// while others are delivered starts as soon as a place is free). Each
	// row's handlers run under the mediator's limit on event handlers
	// (Config.Events.MaxConcurrentHandlers, 1 by default: durable handlers
	// then run one at a time in the service; raise it for throughput).
	// Default 8.
	Concurrency int `json:"concurrency" yaml:"concurrency"`
	// AllEvents makes every concrete event type the mediator has handlers
	// for durable, as if each were registered with Durable: the
	// module-wide default. An event handled only by a handler of an
	// interface type it implements is not included: register it.
	AllEvents bool `json:"allEvents" yaml:"allEvents"`
}

// DeliveryDefaults is c with the defaults for its zero fields.
func DeliveryDefaults(c DeliveryConfig) DeliveryConfig {
	if c.Topic == "" {
		c.Topic = "fxcqrs.local"
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	return c
}

// retryAfter is the wait before attempt n+1, after n failed ones.
func retryAfter(c DeliveryConfig, failed int) time.Duration {
	d := c.RetryInitial
	for i := 1; i < failed && d < c.RetryMax; i++ {
		d *= 2
	}
	return min(d, c.RetryMax)
}
