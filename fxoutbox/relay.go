package fxoutbox

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

func typeOf(v any) reflect.Type { return reflect.TypeOf(v) }

// relay delivers the outbox's rows to the broker: topic by topic and lane
// by lane, in the order the outbox recorded them (by id: the order of
// first write, not of commit), each lane under a lease so that one relay
// at a time sends it (see lanes.go).
type relay struct {
	db  *sql.DB
	q   schema.Queries
	pub message.Publisher
	// traceSend reports each batch's publish to the bus's Tracer (see
	// fxbus.Bus.Send).
	traceSend func(ctx context.Context, topic string, msgs []*message.Message) func(error)
	log       *zap.Logger
	cfg       RelayConfig
	owner     string
	now       func() time.Time

	renewed map[string]time.Time // by now: when this relay last renewed each lease it holds, by name (its goroutine's alone)
	live    int                  // how many relays were alive when last asked (see members)
	liveAt  time.Time            // by now

	cleanInbox func(context.Context) (int64, error) // the outbox's CleanInbox
	cleanedAt  time.Time                            // by now; zero: never

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	after func(time.Duration) <-chan time.Time // Config.After

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool

	// The delivery to this service's mediator (see local.go).
	delivery   DeliveryConfig
	deliver    func(context.Context, row) error
	delivering func() bool  // a mediator is there to deliver to
	nextAt     atomic.Int64 // the earliest schedule this process wrote and has not seen due, ns; 0: none

	hintMu       sync.Mutex
	hinted       map[lane]struct{} // lanes this process's commits wrote to since the last pass
	discoveredAt time.Time         // by now: when a pass last read the topics from the table (the relay goroutine's)

	schedNext      int64     // the Scheduled table's earliest due time when last asked (the relay goroutine's alone)
	schedCheckedAt time.Time // by now; zero: ask

	passes                       atomic.Uint64 // for tests: how many passes ran
	sent, deadLettered, failures atomic.Uint64
	inHand                       atomic.Int64 // rows read and not yet deleted, in the batch being sent
}

// RelayConfig configures the relay. Every field is optional.
type RelayConfig struct {
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

func (c RelayConfig) withDefaults() RelayConfig {
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.Lease <= 0 {
		c.Lease = 4 * time.Second
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

func newRelay(db *sql.DB, q schema.Queries, pub message.Publisher, log *zap.Logger, cfg RelayConfig, now func() time.Time) *relay {
	return &relay{
		db: db, q: q, pub: pub, log: log, cfg: cfg.withDefaults(),
		owner:   uuid.NewString(),
		now:     now,
		renewed: map[string]time.Time{},
		hinted:  map[lane]struct{}{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// notify wakes the relay: a commit put rows in the outbox.
func (r *relay) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// start runs the relay until stopped; once, and not after close.
func (r *relay) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return
	}
	r.started = true
	go r.loop()
}

// close stops the relay after the batch in hand, within ctx. A relay
// never started has nothing in hand: close returns at once.
func (r *relay) close(ctx context.Context) error {
	r.mu.Lock()
	started := r.started
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	r.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		n := r.inHand.Load()
		r.log.Warn("stop deadline passed with the relay still sending; the rows it has not deleted are sent again by the next relay",
			zap.Int64("rowsInHand", n))
		return fmt.Errorf("fxoutbox: relay still sending %d rows: %w", n, ctx.Err())
	}
}

func (r *relay) loop() {
	defer close(r.done)
	defer r.releaseLeases()
	backoff := r.cfg.RetryInitial
	for {
		sent, err := r.safePass()
		r.passes.Add(1)
		r.maybeCleanInbox()
		var wait time.Duration
		switch {
		case err != nil:
			r.logFailure(err, backoff)
			wait = backoff
			backoff = min(2*backoff, r.cfg.RetryMax)
		case sent >= r.cfg.BatchSize:
			backoff = r.cfg.RetryInitial
			continue // a full batch: more may wait, no wake needed
		default: // drained: the next commit wakes it, the poll finds the others' rows
			backoff = r.cfg.RetryInitial
			wait = r.idle(context.Background())
		}
		timer := r.after(wait)
		select {
		case <-r.stop:
			return
		case <-r.wake:
			if err != nil {
				// The broker was down: a commit is no reason to hurry.
				select {
				case <-r.stop:
					return
				case <-timer:
				}
			}
		case <-timer:
		}
	}
}
