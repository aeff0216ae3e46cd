// Package relay is the outbox's sender: its loop, the lanes it leases and
// sends in order, the publish and the fenced delete, and the durable
// delivery of this service's own rows to its mediator. It is built in one
// go by New, from everything it needs; the root package fxoutbox wires it
// to the unit of work, which announces its commits (Relay.Wrote).
package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
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
	// WallNow and WallAfter are the clock a lane's progress window
	// (Config.ProgressInterval) and the linger (Config.Linger) are
	// measured on: time.Now and time.After
	// unless set. A window batches the database's work in real time: a
	// test's fake outbox clock (Now, After), which moves only when told,
	// must not hold the relay's deletes back.
	WallNow   func() time.Time
	WallAfter func(time.Duration) <-chan time.Time
	// Leases holds the relay's leases (its lanes', its member lease): a
	// Holder of its own, for its goroutine alone.
	Leases *lease.Holder
	// Stores, if set, lists the tenants' stores the relay serves beside
	// DB's (see stores.go); it is asked once per poll interval.
	Stores func(ctx context.Context) ([]Store, error)
	// Drained is told when a store that left Stores has no rows left: the
	// relay polls it no more.
	Drained func(id string)
	// Acquire takes a place in the connection budget for a store's turn
	// (nil: no budget); the function it returns gives it back.
	Acquire func(ctx context.Context) (func(), error)
}

// Relay delivers the outbox's rows to the broker: topic by topic and lane
// by lane, in the order the outbox recorded them (by id: the order of
// first write, not of commit), each lane under a lease so that one relay
// at a time sends it (see lanes.go).
type Relay struct {
	db       *sql.DB        // the default store's
	q        schema.Queries // the default store's
	local    Local
	log      *zap.Logger
	cfg      Config
	delivery DeliveryConfig
	now      func() time.Time
	after    func(time.Duration) <-chan time.Time
	sender   *sender // sends a lane's batch of the default store
	proto    sender  // what every store's sender shares: the bus, the clocks, the counters

	leases *lease.Holder // its member lease and the default store's lanes' (the relay goroutine's alone)
	live   int           // how many relays were alive when last asked (see members)
	liveAt time.Time     // by now

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	stopped context.Context // ends with stop: a wait for the connection budget ends with it
	cancel  context.CancelFunc

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool

	hintMu sync.Mutex // guards parts and byID, and each part's hinted
	parts  []*part    // the default store first, then the tenants' stores in the order Stores gave them
	byID   map[string]*part
	def    *part
	turn   int // the index in parts of this pass's first store
	stores storeSource

	passes atomic.Uint64 // for tests: how many passes ran
}

// New returns the relay p describes, not started.
func New(p Params) *Relay {
	cfg, delivery := WithDefaults(p.Config), DeliveryDefaults(p.Delivery)
	if p.WallNow == nil {
		p.WallNow = time.Now
	}
	if p.WallAfter == nil {
		p.WallAfter = time.After
	}
	wake, stop := make(chan struct{}, 1), make(chan struct{})
	stopped, cancel := context.WithCancel(context.Background())
	r := &Relay{
		stopped: stopped, cancel: cancel,
		db: p.DB, q: p.Queries, local: p.Local, log: p.Log, cfg: cfg, delivery: delivery,
		now:    p.Now,
		after:  p.After,
		leases: p.Leases,
		wake:   wake,
		stop:   stop,
		done:   make(chan struct{}),
		stores: storeSource{list: p.Stores, drained: p.Drained, acquire: p.Acquire},
		proto: sender{
			bus: p.Bus, pub: p.Bus.Publisher(), local: p.Local, log: p.Log, cfg: cfg, delivery: delivery,
			now: p.Now, wake: wake, stop: stop, counters: &counters{}, wallNow: p.WallNow, wallAfter: p.WallAfter,
		},
	}
	r.def = r.newPart(Store{DB: p.DB, Queries: p.Queries, Leases: p.Leases})
	r.sender = r.def.sender
	r.parts, r.byID = []*part{r.def}, map[string]*part{"": r.def}
	return r
}

// Stats counts what the relay did since it started.
type Stats struct {
	Sent, DeadLettered, PublishFailures, Expired uint64
}

// Stats returns the relay's counters. DeadLettered counts the expired
// rows too; the failures and the expiries are counted apart, each once,
// so that DeadLettered-Expired never goes down between two reads.
func (r *Relay) Stats() Stats {
	s := r.sender
	failed, expired := s.deadLettered.Load(), s.expired.Load()
	return Stats{Sent: s.sent.Load(), DeadLettered: failed + expired, PublishFailures: s.failures.Load(), Expired: expired}
}

// Passes returns how many passes the relay has run, for tests.
func (r *Relay) Passes() uint64 { return r.passes.Load() }

// Wrote tells the relay that a commit of this process wrote rows to
// lanes of the default store, and wakes it.
func (r *Relay) Wrote(lanes []schema.Lane) { r.WroteIn("", lanes) }

// WroteIn tells the relay that a commit of this process wrote rows to
// lanes of the store id ("" the default one), and wakes it.
func (r *Relay) WroteIn(id string, lanes []schema.Lane) {
	r.hintMu.Lock()
	if p := r.byID[id]; p != nil {
		for _, l := range lanes {
			p.hinted[l] = struct{}{}
		}
	} else {
		r.stores.dirty = true // a store the relay does not serve yet: ask for them next pass
	}
	r.hintMu.Unlock()
	r.notify()
}

// Discover tells the relay that rows came into the outbox that no commit
// of this process announced (due schedules, moved in): its next pass,
// which it runs at once, reads the topics from the table.
func (r *Relay) Discover() { r.DiscoverIn("") }

// DiscoverIn is Discover for the store id.
func (r *Relay) DiscoverIn(id string) {
	r.hintMu.Lock()
	if p := r.byID[id]; p != nil {
		p.discover.Store(true)
	}
	r.hintMu.Unlock()
	r.notify()
}

// notify wakes the relay: a commit put rows in the outbox.
func (r *Relay) notify() { wakeUp(r.wake) }

// wakeUp wakes whoever waits on wake, or leaves the wake it holds.
func wakeUp(wake chan struct{}) {
	select {
	case wake <- struct{}{}:
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
		r.cancel()
	}
	r.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		n := r.sender.inHand.Load() + r.sender.unrecorded.Load()
		r.log.Warn("stop deadline passed with the relay still sending; the rows it has not deleted are sent again by the next relay",
			zap.Int64("rowsInHand", n))
		return fmt.Errorf("fxoutbox: relay still sending %d rows: %w", n, ctx.Err())
	}
}

func (r *Relay) loop() {
	defer close(r.done)
	defer r.releaseLeases()
	defer r.recordAll()
	backoff := r.cfg.RetryInitial
	for {
		began := r.sender.wallNow()
		sent, err := r.safePass()
		var wait time.Duration
		switch {
		case err != nil:
			r.logFailure(err, backoff)
			wait = backoff
			backoff = min(2*backoff, r.cfg.RetryMax)
		case sent >= r.cfg.BatchSize:
			backoff = r.cfg.RetryInitial
			r.passes.Add(1)
			continue // a full batch: more may wait, no wake needed
		default: // drained: the next commit wakes it, the poll finds the others' rows
			backoff = r.cfg.RetryInitial
			wait = r.cfg.PollInterval
		}
		timer := r.after(wait)
		// A window that ends later wakes the relay to record it; one that
		// has ended and is not recorded after a failed pass waits for the
		// backoff (a database outage must not spin the loop).
		window := r.windowEnd(err == nil)
		// Counted once its waits are asked for: a test that moves a fake
		// clock when it sees the count never moves it before them (the
		// move would fire nothing, and the relay would wait for good).
		r.passes.Add(1)
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
			} else if sent > 0 && !r.linger(began) {
				return
			}
		case <-timer:
		case <-window: // a lane's progress is to be recorded
		}
	}
}

// linger waits, after a pass that began at began and sent rows, until
// Config.Linger has passed since then, so that the commits of that time
// go in one batch (see Config.Linger); it reports false if the relay was
// stopped meanwhile. The wakes of those commits are taken with it: the
// next pass reads what they announced.
func (r *Relay) linger(began time.Time) bool {
	wait := min(r.cfg.Linger-r.sender.wallNow().Sub(began), r.cfg.Linger) // a clock that went back waits Linger
	if r.cfg.Linger <= 0 || wait <= 0 {
		return true
	}
	select {
	case <-r.stop:
		return false
	case <-r.sender.wallAfter(wait):
	}
	select { // taken before the pass reads the hints: none is lost
	case <-r.wake:
	default:
	}
	return true
}

// safePass is pass with its panic (a publisher's, say) turned into an
// error: the relay runs on a goroutine of its own, where a panic would
// take the process down. The rows it was sending wait, as for any error.
func (r *Relay) safePass() (sent int, err error) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("relay: a pass panicked; its rows wait", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("fxoutbox: relay panicked: %v", v)
		}
	}()
	return r.pass()
}

// pass sends what it can of every store's topics' lanes it can lease,
// store by store from the one after the last pass's first, and reports
// how many rows it sent.
func (r *Relay) pass() (int, error) {
	ctx := context.Background()
	if err := r.refreshStores(ctx); err != nil {
		r.log.Warn("relay: the tenants' stores cannot be listed; the known ones are served", zap.Error(err))
	}
	r.hintMu.Lock()
	parts := slices.Clone(r.parts)
	r.hintMu.Unlock()
	first := r.turn % len(parts)
	r.turn = (first + 1) % len(parts)
	var errs []error
	sent := 0
	for i := range parts {
		select {
		case <-r.stop:
			return sent, errors.Join(errs...)
		default:
		}
		p := parts[(first+i)%len(parts)]
		if p != r.def && r.now().Before(p.retryAt) {
			continue // it failed: it waits for its own backoff, not the others
		}
		n, err := r.storeTurn(ctx, p)
		sent += n
		switch {
		case err == nil:
			p.backoff = 0
		case p == r.def:
			errs = append(errs, err) // the relay's own backoff
		default:
			r.storeFailed(p, err) // other stores go on at their pace
		}
	}
	return sent, errors.Join(errs...)
}

// storeTurn sends what it can of p's lanes, under one place of the
// connection budget, and at most batchesPerTurn batches in all but one
// per lane past them: one store's backlog holds the pass that long, not
// until it is drained.
func (r *Relay) storeTurn(ctx context.Context, p *part) (int, error) {
	release, err := r.stores.take(r.stopped)
	if err != nil {
		if r.stopping() {
			return 0, nil // the relay's stop ended the wait for a place: nothing failed
		}
		return 0, err
	}
	defer release()
	var errs []error
	// Each step runs under its deadline (Config.StoreTimeout): a store
	// that hangs fails its turn, not the relay.
	sctx, cancel := r.step(ctx)
	topics, lanes, err := r.passLanes(sctx, p)
	err = stepped(sctx, err)
	cancel()
	if err != nil {
		if timedOut(err) {
			return 0, err // it hangs: its progress waits for its next turn
		}
		sctx, cancel := r.step(ctx)
		defer cancel()
		return 0, errors.Join(err, stepped(sctx, p.sender.recordDue(sctx, false)))
	}
	sent, left := 0, batchesPerTurn
	for _, topic := range topics {
		if topic == r.delivery.Topic && (!r.local.Ready()) {
			continue // no mediator here: a replica that has one delivers them
		}
		select {
		case <-r.stop:
			return sent, nil
		default:
		}
		n, err := r.sendTopic(ctx, p, topic, lanes[topic], &left)
		sent += n
		if timedOut(err) {
			return sent, err // it hangs: the rest of its turn waits for its backoff
		}
		if err != nil {
			errs = append(errs, err) // other topics go on
		}
	}
	if len(errs) > 0 || sent >= r.cfg.BatchSize {
		p.discoveredAt = time.Time{} // rows may wait that no commit announces: look at the table next time
	}
	// The windows that ended are recorded after the sends, which their
	// delete would otherwise hold up.
	sctx, cancel = r.step(ctx)
	defer cancel()
	if err := stepped(sctx, p.sender.recordDue(sctx, false)); err != nil {
		errs = append(errs, err)
	}
	if p.draining && len(topics) == 0 && len(errs) == 0 && len(p.sender.progress) == 0 {
		r.drained(sctx, p)
	}
	return sent, errors.Join(errs...)
}

// step is ctx with the deadline of one step of a store's turn
// (Config.StoreTimeout), if any.
func (r *Relay) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return stepContext(ctx, r.cfg.StoreTimeout)
}

// stepContext is ctx with a step's deadline, timeout from now (none if
// timeout is not positive).
func stepContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, timeout)
}

// inStep runs f, a step of the store's turn that waits on its database
// alone, under a deadline of its own (Config.StoreTimeout): its error is
// hung when that deadline ended it. The statements of a batch run so,
// each apart, while the broker's publish between them keeps the turn's
// context: a broker that is away is no store that hangs, and a publish
// that took long leaves the delete after it a whole deadline.
func (s *sender) inStep(ctx context.Context, f func(ctx context.Context) error) error {
	sctx, cancel := stepContext(ctx, s.cfg.StoreTimeout)
	defer cancel()
	return stepped(sctx, f(sctx))
}

// hung is the error of a step that its own deadline (Config.StoreTimeout)
// ended: the store hangs.
type hung struct{ error }

func (h hung) Unwrap() error { return h.error }

// stepped is err of a step run on sctx: hung when sctx's deadline ended
// it. A deadline of another's inside err (a broker's publish, a confirm
// wait) is no store hanging: the turn goes on to the other lanes.
func stepped(sctx context.Context, err error) error {
	if err != nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
		return hung{err}
	}
	return err
}

// timedOut reports whether err is (or holds) a step's that its deadline
// ended: the store hangs, and the rest of its turn is given up.
func timedOut(err error) bool {
	var h hung
	return errors.As(err, &h)
}

// recordAll records every lane's progress as the relay stops, so that
// the next relay does not send those rows again.
func (r *Relay) recordAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.hintMu.Lock()
	parts := slices.Clone(r.parts)
	r.hintMu.Unlock()
	var errs []error
	for _, p := range parts {
		if err := p.sender.recordDue(ctx, true); err != nil {
			errs = append(errs, storeError(p.id, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		r.log.Warn("relay: rows sent and not deleted as it stopped; the next relay sends them again",
			zap.Int64("rows", r.sender.unrecorded.Load()), zap.Error(err))
	}
}

// logFailure says what stopped a pass: the broker, the database's
// connection, or the database itself (a missing table, a constraint),
// which no wait mends and which is logged at error level.
func (r *Relay) logFailure(err error, retryIn time.Duration) { r.logFailureOn(r.db, err, retryIn) }

// logFailureOn is logFailure of a store on db.
func (r *Relay) logFailureOn(db *sql.DB, err error, retryIn time.Duration) {
	var be *brokerError
	// The ping is bounded as a turn is: a database that hangs must not
	// hold the relay here either.
	ctx, cancel := r.step(context.Background())
	defer cancel()
	switch {
	case errors.As(err, &be) && onlyBroker(err):
		r.log.Warn("relay: the broker is unavailable or refused; rows wait", zap.Error(err), zap.Duration("retryIn", retryIn))
	case timedOut(err):
		r.log.Warn("relay: a step of a store's turn ran past RelayConfig.StoreTimeout (a lock held on its tables, a database that hangs); rows wait",
			zap.Error(err), zap.Duration("retryIn", retryIn))
	case db.PingContext(ctx) != nil:
		r.log.Warn("relay: the database is unreachable; rows wait", zap.Error(err), zap.Duration("retryIn", retryIn))
	default:
		r.log.Error("relay: the database refused a statement (not the broker, not the connection): check the schema (fxoutbox.Migrate) and the database's log; rows wait",
			zap.Error(err), zap.Duration("retryIn", retryIn))
	}
}

// onlyBroker reports whether every error joined in err is the broker's.
func onlyBroker(err error) bool {
	var be *brokerError
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			if !errors.As(e, &be) {
				return false
			}
		}
		return true
	}
	return errors.As(err, &be)
}
