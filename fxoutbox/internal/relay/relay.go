// Package relay is the outbox's sender: its loop, the lanes it leases and
// sends in order, the publish and the fenced delete, and the durable
// delivery of this service's own rows to its mediator. It is built in one
// go by New, from everything it needs; the root package fxoutbox wires it
// to the unit of work, which announces its commits (Relay.Wrote).
package relay

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// Bus is what the relay needs of the fxbus.Bus: the publisher it
// delivers through, and the tracer's view of each batch it publishes.
type Bus interface {
	Publisher() message.Publisher
	// Send reports a batch's publish to the bus's Tracer (see
	// fxbus.Bus.Send).
	Send(ctx context.Context, topic string, msgs []*message.Message) (end func(error))
}

// Local is this service's own mediator, where the rows of the delivery
// topic go instead of a broker (durable events, scheduled commands).
type Local interface {
	// Ready reports whether a mediator is there to deliver to: a relay
	// without one leaves the delivery topic to a replica that has one.
	Ready() bool
	// Deliver runs one row on the mediator. An error that wraps a
	// *PermanentError sends the row to the dead letters at once.
	Deliver(ctx context.Context, msgID string, payload []byte, metadata string) error
}

// Params is everything a relay is made of.
type Params struct {
	DB      *sql.DB
	Queries schema.Queries
	Bus     Bus
	Local   Local
	Log     *zap.Logger
	// Config is the relay's (fxoutbox.RelayConfig), Delivery the
	// delivery's to Local; New fills in their defaults.
	Config   Config
	Delivery DeliveryConfig
	// Now and After are the outbox's clock (fxoutbox.Config.Now, After).
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// Leases holds the relay's leases (its lanes', its member lease): a
	// Holder of its own, for its goroutine alone.
	Leases *lease.Holder
}

// Relay delivers the outbox's rows to the broker: topic by topic and lane
// by lane, in the order the outbox recorded them (by id: the order of
// first write, not of commit), each lane under a lease so that one relay
// at a time sends it (see lanes.go).
type Relay struct {
	db       *sql.DB
	q        schema.Queries
	bus      Bus
	pub      message.Publisher
	local    Local
	log      *zap.Logger
	cfg      Config
	delivery DeliveryConfig
	now      func() time.Time
	after    func(time.Duration) <-chan time.Time

	leases *lease.Holder // its lanes' and its member lease (the relay goroutine's alone)
	live   int           // how many relays were alive when last asked (see members)
	liveAt time.Time     // by now

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool

	hintMu       sync.Mutex
	hinted       map[schema.Lane]struct{} // lanes this process's commits wrote to since the last pass
	discoveredAt time.Time                // by now: when a pass last read the topics from the table (the relay goroutine's)
	discover     atomic.Bool              // rows came that no commit announced (see Discover): read the table next pass

	passes                       atomic.Uint64 // for tests: how many passes ran
	sent, deadLettered, failures atomic.Uint64
	inHand                       atomic.Int64 // rows read and not yet deleted, in the batch being sent
}

// New returns the relay p describes, not started.
func New(p Params) *Relay {
	cfg := WithDefaults(p.Config)
	return &Relay{
		db: p.DB, q: p.Queries, bus: p.Bus, pub: p.Bus.Publisher(), local: p.Local, log: p.Log,
		cfg: cfg, delivery: DeliveryDefaults(p.Delivery),
		now:    p.Now,
		after:  p.After,
		leases: p.Leases,
		hinted: map[schema.Lane]struct{}{},
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// Stats counts what the relay did since it started.
type Stats struct {
	Sent, DeadLettered, PublishFailures uint64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{Sent: r.sent.Load(), DeadLettered: r.deadLettered.Load(), PublishFailures: r.failures.Load()}
}

// Passes returns how many passes the relay has run, for tests.
func (r *Relay) Passes() uint64 { return r.passes.Load() }

// Wrote tells the relay that a commit of this process wrote rows to
// lanes, and wakes it.
func (r *Relay) Wrote(lanes []schema.Lane) {
	r.hintMu.Lock()
	for _, l := range lanes {
		r.hinted[l] = struct{}{}
	}
	r.hintMu.Unlock()
	r.notify()
}

// Discover tells the relay that rows came into the outbox that no commit
// of this process announced (due schedules, moved in): its next pass,
// which it runs at once, reads the topics from the table.
func (r *Relay) Discover() {
	r.discover.Store(true)
	r.notify()
}

// notify wakes the relay: a commit put rows in the outbox.
func (r *Relay) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start runs the relay until stopped; once, and not after Close.
func (r *Relay) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return
	}
	r.started = true
	go r.loop()
}

// Close stops the relay after the batch in hand, within ctx. A relay
// never started has nothing in hand: Close returns at once.
func (r *Relay) Close(ctx context.Context) error {
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

func (r *Relay) loop() {
	defer close(r.done)
	defer r.releaseLeases()
	backoff := r.cfg.RetryInitial
	for {
		sent, err := r.safePass()
		r.passes.Add(1)
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
			wait = r.cfg.PollInterval
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
