package fxoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/admin"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/upkeep"
	"github.com/google/uuid"
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
	// batches, by every replica (beside its relay). Default 7 days, as NServiceBus
	// keeps its deduplication data. A message the broker redelivers after
	// its record was deleted is handled again: keep it longer than the
	// broker may hold and redeliver a message.
	InboxRetention time.Duration `json:"inboxRetention" yaml:"inboxRetention"`
	// Now is the outbox's clock: the inbox's records and their clean-up,
	// and the relay's leases, compare against it, in SQL. Default
	// time.Now; tests pass their own. Under fx, Module gives it to the
	// bus too (as its fxbus.Clock), which stamps and judges the
	// messages' deliver-by times; without fx, give the bus the same one
	// (fxbus.Config.Now).
	Now func() time.Time `json:"-" yaml:"-"`
	// After is how the relay waits between passes (at most
	// RelayConfig.PollInterval) and after a failure, and how the
	// background work beside it waits: the schedules' move (until the
	// next schedule falls due, at most the poll interval) and the inbox's
	// clean-up. A channel that delivers once d has passed by the outbox's
	// clock. Default time.After. A test gives Now and After from one fake
	// clock: the relay then passes when the test moves that clock, not
	// when the wall clock does.
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
	// TenantStores gives tenants stores of their own: a database, or a
	// PostgreSQL schema, per tenant (see docs/tenants.md). A unit of work
	// then begins on the store of its call's tenant (fxbus.TenantOf), the
	// default tenant's ("") on the outbox's own database, and one relay
	// serves every store; the source is read at Start and again once per
	// poll interval, and a store that appears is migrated beside the relay
	// (on a goroutine of its own, within a minute; it is served once
	// migrated, and tried again at the next read if its migration fails).
	// Default nil: the shared mode, every tenant's rows in the outbox's
	// database.
	// Under fxoutbox.Module, a TenantStores in the graph is taken when
	// this is nil.
	TenantStores TenantStores `json:"-" yaml:"-"`
	// MaxConnections is the connection budget across every store: a unit
	// of work (and InTenant) takes a place before it begins its
	// transaction and gives it back at its commit or rollback; the relay
	// takes one per store's turn, each store's schedules' move one per
	// round, its inbox's clean-up (and CleanInbox) one per batch, and
	// the migration of a tenant's store one. A call that finds it spent
	// waits on its context: the context's end is its error, and nothing
	// began. Default 0: no budget (each pool's own limit). With durable
	// events or scheduled commands, at least 2: the relay's turn waits
	// for the deliveries it runs, which take places of their own.
	MaxConnections int `json:"maxConnections" yaml:"maxConnections"`
	// TenantMigrations bring the tables of packages beside the outbox
	// (fxsaga's sagas) into each tenant's store, after the outbox's own
	// migration of it: at Start for the stores listed then, and for a
	// store that appears later before it is served. Under fx, packages
	// add theirs with AsTenantMigration. Each runs under the place of the
	// connection budget (MaxConnections) that the store's migration took,
	// on a connection of its own at a time: it must not begin a unit of
	// work (InTenant), which would wait for another place.
	TenantMigrations []TenantMigration `json:"-" yaml:"-"`
}

// Outbox is the unit of work, the outbox and its relay, for one database
// and one bus. Under fx, [Module] makes one; without fx, make one with
// [New], register [Outbox.UnitOfWork] as the mediator's middleware, and
// Start and Stop it.
type Outbox struct {
	cfg      Config
	db       *sql.DB
	q        schema.Queries
	local    *deliverer // the durable events' and scheduled commands' mediator
	uow      *unitOfWork
	left     *leftovers // the Forwarder
	relay    *relay.Relay
	promoter *upkeep.SchedulePromoter // beside the relay: due schedules into the outbox
	cleaner  *upkeep.InboxCleaner     // beside the relay: the inbox's old records out
	admin    *Admin
	stores   *stores // the default store and the tenants'
	budget   *budget // Config.MaxConnections; nil: none
	owner    string  // the leases' owner: this process's outbox
	log      *zap.Logger
}

// New returns the outbox of db for bus, whose routed events it takes
// over. Without fx, give the mediator the outbox's [Outbox.UnitOfWork] as
// middleware and [Outbox.Forwarder] as its Forwarder, not the bus (the
// outbox writes what the bus would have published; the bus as Forwarder
// would skip what the unit of work wrote, but publish a stream's events
// directly). The relay delivers through the bus's Publisher.
func New(db *sql.DB, bus *fxbus.Bus, cfg Config, log *zap.Logger) (*Outbox, error) {
	cfg, reg, err := checkConfig(db, bus, cfg)
	if err != nil {
		return nil, err
	}
	adm, err := admin.New(db, cfg.Dialect, cfg.Tables, cfg.Now)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("fxoutbox")
	q := schema.NewQueries(cfg.Dialect, cfg.Tables)
	local := newDeliverer(bus, log, cfg.Delivery.Topic, cfg.Delivery.AllEvents, cfg.Deliverables, reg)
	// One owner for the process's leases, a Holder per goroutine: the
	// relay's release at stop gives the schedule lease back too.
	rc := relay.WithDefaults(cfg.Relay)
	owner, leases := uuid.NewString(), leaseStatements(q)
	o := &Outbox{cfg: cfg, db: db, q: q, local: local, owner: owner, log: log, budget: newBudget(cfg.MaxConnections)}
	o.stores = &stores{o: o, src: cfg.TenantStores, byID: map[string]*store{}}
	o.stores.def = &store{db: db, d: cfg.Dialect, q: q, admin: adm.WithLanes(cfg.Relay)}
	params := relay.Params{
		DB: db, Queries: q, Bus: bus, Local: local, Log: log, Config: cfg.Relay, Delivery: cfg.Delivery,
		Now: cfg.Now, After: cfg.After, Leases: lease.NewHolder(db, leases, owner, rc.Lease, cfg.Now),
	}
	if cfg.TenantStores != nil {
		params.Stores, params.Drained = o.stores.refresh, o.stores.drained
	}
	if o.budget != nil {
		params.Acquire = o.budget.take
	}
	sender := relay.New(params)
	o.relay = sender
	promoter := upkeep.NewSchedulePromoter(upkeep.PromoterParams{
		DB: db, Queries: q, Sender: sender, Acquire: o.acquire(), Log: log, Now: cfg.Now, After: cfg.After,
		Leases: lease.NewHolder(db, leases, owner, rc.Lease, cfg.Now),
		Config: upkeep.PromoterConfig{
			PollInterval: rc.PollInterval, BatchSize: rc.BatchSize, RetryInitial: rc.RetryInitial, RetryMax: rc.RetryMax,
		},
	})
	o.uow = &unitOfWork{
		stores: o.stores, budget: o.budget, bus: bus, local: local, sender: sender,
		inbox: cfg.Inbox, eagerEv: cfg.EventTransactions, now: cfg.Now,
		lanes: func(topic string) int { return relay.LanesOf(cfg.Relay, topic) },
	}
	o.left, o.promoter = &leftovers{u: o.uow, log: log}, promoter
	o.cleaner = upkeep.NewInboxCleaner(db, q, upkeep.InboxCleanerConfig{Retention: cfg.InboxRetention, Acquire: o.acquire()}, log, cfg.Now, cfg.After)
	o.admin = o.stores.def.admin
	return o, nil
}

// checkConfig fills in cfg's defaults and reports every problem of db,
// bus and cfg at once; it returns the registry of cfg's Deliverables.
func checkConfig(db *sql.DB, bus *fxbus.Bus, cfg Config) (Config, deliverables, error) {
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
	cfg.Delivery = relay.DeliveryDefaults(cfg.Delivery)
	if cfg.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("fxoutbox.New: Config.MaxConnections must not be negative: got %d", cfg.MaxConnections))
	}
	if cfg.MaxConnections == 1 && (len(cfg.Deliverables) > 0 || cfg.Delivery.AllEvents) {
		errs = append(errs, errors.New("fxoutbox.New: Config.MaxConnections must be at least 2 with durable events or scheduled commands: the relay's turn holds a place while their deliveries take others"))
	}
	errs = append(errs, schema.Validate(cfg.Tables), relay.ValidateLanes(cfg.Relay))
	var reg deliverables
	if bus != nil {
		var err error
		reg, err = newDeliverables(bus, cfg.Deliverables)
		errs = append(errs, err)
	}
	return cfg, reg, errors.Join(errs...)
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
	// Expired is the rows among DeadLettered that the relay moved there
	// because they came to this service's own delivery (durable events,
	// scheduled commands) after their deliver-by time
	// (fxbus.MetadataDeliverBy): undelivered, as their producer asked.
	Expired uint64
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
	r := o.relay.Stats()
	return Stats{
		Sent: r.Sent, DeadLettered: r.DeadLettered, PublishFailures: r.PublishFailures, Expired: r.Expired,
		InboxDuplicates: o.uow.duplicates.Load(),
	}
}

// Start checks that the schema is at the version this code needs (see
// Migrate), then starts the relay and, beside it, the promotion of due
// schedules and the inbox's clean-up.
func (o *Outbox) Start(ctx context.Context) error {
	if err := checkSingleWriter(o.db, o.cfg.Dialect); err != nil {
		return err
	}
	if err := CheckSchema(ctx, o.db, o.cfg.Dialect, o.cfg.Tables); err != nil {
		return err
	}
	if err := o.checkVersions(ctx); err != nil {
		return err
	}
	if (len(o.local.registry().byName) > 0 || o.cfg.Delivery.AllEvents) && !o.local.Ready() {
		return errors.New("fxoutbox: Start: Config.Deliverables need the mediator they run on: call Outbox.DeliverTo before Start (fxoutbox.Module does)")
	}
	if m := o.local.mediator.Load(); m != nil {
		if err := checkInboxNames(m, o.local.registry(), o.cfg.Inbox); err != nil {
			return err
		}
	}
	if o.cfg.TenantStores != nil {
		// Every tenant's store is migrated and served from the start; one
		// that cannot be is an error that names it.
		if _, err := o.stores.refresh(ctx); err != nil {
			return fmt.Errorf("fxoutbox: Start: %w", err)
		}
	}
	o.relay.Start()
	o.promoter.Start()
	o.cleaner.Start()
	o.stores.start()
	return nil
}

// DeliverTo gives the outbox the mediator that its durable events and
// scheduled commands run on. fxoutbox.Module calls it; without fx, call it
// before Start, and before the first call, when Config.Deliverables is not
// empty or DeliveryConfig.AllEvents is on.
func (o *Outbox) DeliverTo(m *fxcqrs.Mediator) { o.local.deliverTo(m) }

// Admin returns the outbox's Admin, on its clock.
func (o *Outbox) Admin() *Admin { return o.admin }

// Stop stops the promotion of schedules and the inbox's clean-up, then
// the relay after the batch in hand, within ctx; the relay gives back its
// leases as it stops.
func (o *Outbox) Stop(ctx context.Context) error {
	return errors.Join(o.promoter.Close(ctx), o.cleaner.Close(ctx), o.stores.stop(ctx), o.relay.Close(ctx))
}

// CleanInbox deletes the inbox's records older than InboxRetention by the
// outbox's clock, in batches of a bounded size, and returns how many it
// deleted. The outbox runs it in the background on every replica (they
// may run it at once); call it yourself from a job if you prefer.
func (o *Outbox) CleanInbox(ctx context.Context) (int64, error) { return o.cleaner.Clean(ctx) }

// checkSingleWriter refuses a SQLite pool that may open more than one
// connection. SQLite has one writer: two connections that write at once
// meet SQLITE_BUSY (or, in WAL mode, SQLITE_BUSY_SNAPSHOT when a read
// transaction turns into a write), which a command sees as a failure
// while the relay deletes what it sent. With one connection they wait
// for each other in the pool instead. A UnitOfWork without a relay is
// not started and not refused.
func checkSingleWriter(db *sql.DB, d Dialect) error {
	if d != SQLite {
		return nil
	}
	if n := db.Stats().MaxOpenConnections; n != 1 {
		limit := "any number of connections"
		if n > 1 {
			limit = fmt.Sprintf("up to %d connections", n)
		}
		return fmt.Errorf("fxoutbox: Start: the SQLite pool allows %s; SQLite has one writer, and the relay's writes would meet the commands' with SQLITE_BUSY: call db.SetMaxOpenConns(1) (see the package doc, \"SQLite\")", limit)
	}
	return nil
}
