package fxoutbox

import (
	"database/sql"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

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
		// repair tools: from the database and the tenant source alone, so
		// that the bus needs no *Outbox (which needs the bus). With tenant
		// stores, each message's in its tenant's store (tenant_recorder.go).
		// It is the bus's Parking too (see fxbus.InOrder), replaying into
		// the relay's lanes.
		fx.Provide(func(p recorderParams) (fxbus.DeadLetterRecorder, error) {
			return newDeadLetterRecorder(p.DB, p.Config, p.TenantStores, p.Logger)
		}),
		// The bus's clock is the outbox's: a deliver-by is stamped and
		// judged by the clock that runs the relay and the schedules, given
		// once in Config.Now.
		fx.Provide(func(cfg Config) fxbus.Clock { return cfg.Now }),
		// The lanes' leases of consumer replicas on a broker that keeps
		// none (amqpbus.Module takes them), on the outbox's database.
		fx.Provide(func(db *sql.DB, cfg Config) (fxbus.LeaseStore, error) {
			return LaneLeaseStore(db, cfg.Dialect, cfg.Tables)
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

type recorderParams struct {
	fx.In

	DB           *sql.DB
	Config       Config
	TenantStores TenantStores `optional:"true"`
	Logger       *zap.Logger  `optional:"true"`
}

type outboxParams struct {
	fx.In

	DB           *sql.DB
	Bus          *fxbus.Bus
	Config       Config
	Logger       *zap.Logger       `optional:"true"`
	Deliverables []Deliverable     `group:"fxoutbox.deliverables"`
	TenantStores TenantStores      `optional:"true"`
	Migrations   []TenantMigration `group:"fxoutbox.tenant_migrations"`
	Lifecycle    fx.Lifecycle
}

func provideOutbox(p outboxParams) (*Outbox, error) {
	cfg := p.Config
	cfg.Deliverables = append(append([]Deliverable(nil), cfg.Deliverables...), p.Deliverables...)
	if cfg.TenantStores == nil {
		cfg.TenantStores = p.TenantStores
	}
	cfg.TenantMigrations = append(append([]TenantMigration(nil), cfg.TenantMigrations...), p.Migrations...)
	o, err := New(p.DB, p.Bus, cfg, p.Logger)
	if err != nil {
		return nil, err
	}
	p.Lifecycle.Append(fx.Hook{OnStart: o.Start, OnStop: o.Stop})
	return o, nil
}

// SharedRateLimits gives the bus of an fx application the outbox's
// SharedLimiter, on the outbox's database and tables, as its
// fxbus.Limiter: the subscriptions' rate limits (fxbus.RateLimit) are
// then one budget across every replica, at the cost of a commit per
// message a limit lets go. Without it, each replica's bus keeps its
// budgets in the process. Use it beside Module.
var SharedRateLimits = fx.Provide(func(db *sql.DB, cfg Config) (fxbus.Limiter, error) {
	return NewSharedLimiter(db, cfg.Dialect, cfg.Tables)
})
