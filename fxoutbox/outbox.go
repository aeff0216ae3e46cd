package fxoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Config is the outbox's configuration. Dialect is required.
type Config struct {
	// Dialect is the database's: PostgreSQL, MySQL (MariaDB too) or
	// SQLite. Required. In JSON and YAML: "postgresql", "mysql" or
	// "sqlite".
	Dialect Dialect `json:"dialect" yaml:"dialect"`
	// Tables names the tables; defaults for the empty ones.
	Tables Tables `json:"tables" yaml:"tables"`
	// Relay configures the relay.
	Relay RelayConfig `json:"relay" yaml:"relay"`
	// Inbox makes each event handler handle an inbound message once per
	// message id: the id and the handler's writes commit in one
	// transaction, and a redelivery skips the handlers that handled it.
	// Default false. The inbox knows a handler by its name (its type's):
	// two handlers of one event must be of two types (Start refuses two
	// of one type, which the inbox would take for one).
	Inbox bool `json:"inbox" yaml:"inbox"`
	// EventTransactions gives every event handler a transaction before it
	// runs (Tx(ctx) is not nil in it). Default false: an event handler
	// runs without one, and the routed follow-ups it emitted are written
	// in a transaction of their own after it returns.
	EventTransactions bool `json:"eventTransactions" yaml:"eventTransactions"`
	// InboxRetention is how long the inbox keeps each (handler, message id)
	// record; older ones are deleted in the background, in bounded
	// batches, by every replica's relay. Default 7 days, as NServiceBus
	// keeps its deduplication data. A message the broker redelivers after
	// its record was deleted is handled again: keep it longer than the
	// broker may hold and redeliver a message.
	InboxRetention time.Duration `json:"inboxRetention" yaml:"inboxRetention"`
	// Now is the outbox's clock: the inbox's records and their clean-up,
	// and the relay's leases, compare against it, in SQL. Default
	// time.Now; tests pass their own.
	Now func() time.Time `json:"-" yaml:"-"`
	// After is how the relay waits between passes (at most
	// RelayConfig.PollInterval, less when a schedule falls due sooner) and
	// after a failure: a channel that delivers once d has passed by the
	// outbox's clock. Default time.After. A test gives Now and After
	// from one fake clock: the relay then passes when the test moves that
	// clock, not when the wall clock does.
	After func(d time.Duration) <-chan time.Time `json:"-" yaml:"-"`
	// MaxLag is how far behind the relay may fall (Lag: the age of the
	// oldest due row) before the outbox's readiness check fails. Default
	// 1m.
	MaxLag time.Duration `json:"maxLag" yaml:"maxLag"`
	// Deliverables are the event types whose in-process handlers are
	// durable (DurableEvent) and the command types that may be scheduled
	// (ScheduledCommand). Under fx, register them with Durable and
	// Schedulable instead.
	Deliverables []Deliverable `json:"-" yaml:"-"`
	// Delivery configures how the relay delivers them.
	Delivery DeliveryConfig `json:"delivery" yaml:"delivery"`
	// Requests wraps requests (queries, Send) in a unit of work too.
	// Default false: queries rarely write. For a finer scope, register
	// Outbox.Middleware yourself with fxcqrs.ForMessages.
	Requests bool `json:"requests" yaml:"requests"`
}

// Outbox is the unit of work, the outbox and its relay, for one database
// and one bus. Under fx, [Module] makes one; without fx, make one with
// [New], register [Outbox.UnitOfWork] as the mediator's middleware, and
// Start and Stop it.
type Outbox struct {
	cfg      Config
	db       *sql.DB
	bus      *fxbus.Bus
	reg      atomic.Pointer[deliverables] // replaced once by DeliverTo with AllEvents
	log      *zap.Logger
	mediator atomic.Pointer[fxcqrs.Mediator] // where the Deliverables run; see DeliverTo
	uow      *unitOfWork
	left     *leftovers // the Forwarder
	relay    *relay
	q        schema.Queries
	admin    *Admin
}

// New returns the outbox of db for bus, whose routed events it takes
// over. Without fx, give the mediator the outbox's [Outbox.UnitOfWork] as
// middleware and [Outbox.Forwarder] as its Forwarder, not the bus (the
// outbox writes what the bus would have published; the bus as Forwarder
// would skip what the unit of work wrote, but publish a stream's events
// directly). The relay delivers through the bus's Publisher.
func New(db *sql.DB, bus *fxbus.Bus, cfg Config, log *zap.Logger) (*Outbox, error) {
	var errs []error
	if db == nil {
		errs = append(errs, errors.New("fxoutbox.New: nil *sql.DB"))
	}
	if bus == nil {
		errs = append(errs, errors.New("fxoutbox.New: nil *fxbus.Bus"))
	}
	if cfg.Dialect < PostgreSQL || cfg.Dialect > SQLite {
		errs = append(errs, fmt.Errorf("fxoutbox.New: Config.Dialect must be fxoutbox.PostgreSQL, MySQL or SQLite: got %v", cfg.Dialect))
	}
	cfg.Tables = schema.WithDefaults(cfg.Tables)
	if cfg.InboxRetention <= 0 {
		cfg.InboxRetention = 7 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = time.Minute
	}
	cfg.Delivery = cfg.Delivery.withDefaults()
	errs = append(errs, schema.Validate(cfg.Tables), cfg.Relay.validateLanes())
	var reg deliverables
	if bus != nil {
		var err error
		reg, err = newDeliverables(bus, cfg.Deliverables)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("fxoutbox")
	q := schema.NewQueries(cfg.Dialect, cfg.Tables)
	o := &Outbox{cfg: cfg, db: db, bus: bus, log: log, q: q, admin: &Admin{db: db, d: cfg.Dialect, t: cfg.Tables, q: q, now: cfg.Now, lanes: cfg.Relay.withDefaults().lanesOf}}
	o.reg.Store(&reg)
	o.relay = newRelay(db, q, bus.Publisher(), log, cfg.Relay, cfg.Now)
	o.relay.cleanInbox = o.CleanInbox
	o.relay.traceSend = bus.Send
	o.relay.after = cfg.After
	o.relay.delivery = cfg.Delivery
	o.relay.deliver = o.deliver
	o.relay.delivering = func() bool { return o.mediator.Load() != nil }
	o.uow = &unitOfWork{
		db: db, q: q, bus: bus, wake: o.relay.notify, inbox: cfg.Inbox, eagerEv: cfg.EventTransactions, now: cfg.Now,
		reg: &o.reg, delivery: cfg.Delivery, wakeAt: o.relay.notifyAt, hint: o.relay.hint,
		lanes: o.relay.cfg.lanesOf,
	}
	o.left = &leftovers{u: o.uow, log: log}
	return o, nil
}

// UnitOfWork returns the middleware that runs each command (and each event
// handler) in a transaction, writes the routed events it emitted to the
// outbox in that transaction, then commits; in-process event handlers run
// after the commit. A request runs without a transaction unless
// Config.Requests: the routed and durable events it emitted are written
// in a transaction of their own after it returns. Streams are never
// wrapped.
func (o *Outbox) UnitOfWork() fxcqrs.Middleware {
	if o.cfg.Requests {
		return fxcqrs.ForKinds(o.uow, fxcqrs.KindRequest, fxcqrs.KindCommand, fxcqrs.KindEvent)
	}
	return fxcqrs.ForKinds(requestsAfter{o.uow}, fxcqrs.KindRequest, fxcqrs.KindCommand, fxcqrs.KindEvent)
}

// requestsAfter is the unit of work that gives requests no transaction
// but still writes what they emitted, as it does for event handlers (and
// their durable events too, which no Forwarder takes).
type requestsAfter struct{ *unitOfWork }

func (r requestsAfter) Handle(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
	if call.Kind == fxcqrs.KindRequest && unitOf(ctx) == nil {
		return r.lazy(ctx, next)
	}
	return r.unitOfWork.Handle(ctx, call, next)
}

// Forwarder returns the mediator's Forwarder under the outbox: give it to
// fxcqrs.WithForwarder without fx, instead of the bus (fxoutbox.Module
// does so). The unit of work writes the routed events of the calls it
// wraps; this writes, in a transaction of their own, those of the calls it
// does not (a stream's items), so that no routed event is published
// directly or lost.
func (o *Outbox) Forwarder() fxcqrs.Forwarder { return o.left }

// Middleware returns the unit of work unscoped (streams excepted), to
// scope with fxcqrs.ForKinds or fxcqrs.ForMessages yourself, in place of
// UnitOfWork.
func (o *Outbox) Middleware() fxcqrs.Middleware { return o.uow }

// Stats counts what the relay did since it started.
type Stats struct {
	// Sent is the rows published and deleted.
	Sent uint64
	// DeadLettered is the rows moved to the dead letter table: watch it.
	DeadLettered uint64
	// PublishFailures is the publishes the broker refused, each retried
	// later (the rows waited).
	PublishFailures uint64
	// InboxDuplicates is the handlings of an inbound message skipped
	// because the inbox had recorded that handler with that message: the
	// broker's redeliveries and duplicates, each absorbed once.
	InboxDuplicates uint64
}

// Stats returns the relay's and the inbox's counters, for metrics.
func (o *Outbox) Stats() Stats {
	return Stats{
		Sent: o.relay.sent.Load(), DeadLettered: o.relay.deadLettered.Load(), PublishFailures: o.relay.failures.Load(),
		InboxDuplicates: o.uow.duplicates.Load(),
	}
}

// Start checks that the schema is at the version this code needs (see
// Migrate), then starts the relay.
func (o *Outbox) Start(ctx context.Context) error {
	if err := CheckSchema(ctx, o.db, o.cfg.Dialect, o.cfg.Tables); err != nil {
		return err
	}
	if (len(o.reg.Load().byName) > 0 || o.cfg.Delivery.AllEvents) && o.mediator.Load() == nil {
		return errors.New("fxoutbox: Start: Config.Deliverables need the mediator they run on: call Outbox.DeliverTo before Start (fxoutbox.Module does)")
	}
	if m := o.mediator.Load(); m != nil {
		if err := o.checkInboxNames(m); err != nil {
			return err
		}
	}
	o.relay.start()
	return nil
}

// Stop stops the relay after the batch in hand, within ctx.
func (o *Outbox) Stop(ctx context.Context) error { return o.relay.close(ctx) }

// Module is the transactional outbox and inbox for an fx application. It
// takes a *sql.DB and a Config from the graph, and the fxbus.Bus of
// fxbus.Module, whose routes it takes over: routed events are written to
// the outbox in the handler's transaction instead of being published, and
// the relay, which the lifecycle starts and stops, delivers them.
//
// It takes the routes over by decorating the fxcqrs.Forwarder that
// fxbus.Module provides with the outbox's own (Outbox.Forwarder), so that
// nothing is published directly (and so that the relay stops after the mediator, see
// takeOverForwarding). Use it at the application's top level, where
// fxcqrs.Module sees the decoration.
var Module = fx.Options(
	fx.Module("fxoutbox",
		fx.Provide(provideOutbox),
		fxcqrs.AsChecks(func(o *Outbox) []fxcqrs.Check { return o.Checks() }),
		// The bus records what its subscriptions dead-letter here, for the
		// repair tools: from the database alone, so that the bus needs no
		// *Outbox (which needs the bus).
		// It is the bus's Parking too (see fxbus.InOrder), replaying into
		// the relay's lanes.
		fx.Provide(func(db *sql.DB, cfg Config) (fxbus.DeadLetterRecorder, error) {
			a, err := NewAdmin(db, cfg.Dialect, cfg.Tables, cfg.Now)
			if err != nil {
				return nil, err
			}
			return a.WithLanes(cfg.Relay), nil
		}),
		fxcqrs.AsMiddleware(func(o *Outbox) fxcqrs.Middleware { return o.UnitOfWork() }),
		fx.Invoke(func(o *Outbox, m *fxcqrs.Mediator) { o.DeliverTo(m) }),
	),
	fx.Decorate(takeOverForwarding),
)

// takeOverForwarding gives the mediator the outbox's Forwarder in place of
// the bus: the outbox writes the routed events. Taking the *Outbox builds it before the mediator, so
// that its hook is appended first and stops last, after the bus has
// stopped taking messages and the mediator has drained, in whatever order
// the application lists the modules.
func takeOverForwarding(_ fxcqrs.Forwarder, o *Outbox) fxcqrs.Forwarder { return o.Forwarder() }

type outboxParams struct {
	fx.In

	DB           *sql.DB
	Bus          *fxbus.Bus
	Config       Config
	Logger       *zap.Logger   `optional:"true"`
	Deliverables []Deliverable `group:"fxoutbox.deliverables"`
	Lifecycle    fx.Lifecycle
}

func provideOutbox(p outboxParams) (*Outbox, error) {
	cfg := p.Config
	cfg.Deliverables = append(append([]Deliverable(nil), cfg.Deliverables...), p.Deliverables...)
	o, err := New(p.DB, p.Bus, cfg, p.Logger)
	if err != nil {
		return nil, err
	}
	p.Lifecycle.Append(fx.Hook{OnStart: o.Start, OnStop: o.Stop})
	return o, nil
}
