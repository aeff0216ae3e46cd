package fxsaga

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Module runs sagas under fx. It takes a Store and an optional
// Config from the graph, with the mediator of fxcqrs.Module,
// registers StepHandler, and provides the *Runner. Its lifecycle recovers
// the sagas registered with Register: at start, then every
// RecoveryInterval, in the background; Stop ends recovery and waits, within
// its deadline, for the saga in hand, leaving the rest consistent for the
// next recovery.
//
// It also registers what times waiting sagas out (Await): the
// DeadlineHandler, and Deadline as an fxoutbox.ScheduledCommand, which the
// outbox module delivers at each deadline. Each event type a saga waits
// for needs a Resume of its own.
//
// With tenant stores (fxoutbox.Config.TenantStores) each tenant's sagas
// live in its store, so the saga tables must be there too: when the
// Store is an *SQL (SQLStore's, or one of NewSQL's on any database),
// Module gives the outbox a TenantMigration of its tables, which the
// outbox runs on each tenant's store after its own migration of it, at
// Start and when a store appears. The default tenant's sagas stay in the
// Store's own database, which Migrate migrates as before.
var Module = fx.Module("fxsaga",
	fxcqrs.AsCommandHandler(func() StepHandler { return StepHandler{} }),
	fxcqrs.AsCommandHandler(func(r *Runner) *DeadlineHandler { return &DeadlineHandler{binding{r}} }),
	fxoutbox.Schedulable[Deadline](),
	fx.Provide(provideRunner, newRecovery, func() *sqlOfGraph { return &sqlOfGraph{} }),
	fx.Provide(fx.Annotate(tenantMigration, fx.ResultTags(`group:"fxoutbox.tenant_migrations"`))),
	fxcqrs.AsChecks(checks),
	fx.Invoke(recoverRegistered),
)

// checks are the module's health checks: fxsaga.schema, liveness, when
// the store can check its schema (SQL: one read of its migrations
// table), and fxsaga.recovery.
func checks(rc *recovery, store Store) []fxcqrs.Check {
	cs := []fxcqrs.Check{rc.check()}
	if c, ok := store.(schemaChecker); ok {
		cs = append(cs, fxcqrs.Check{Name: "fxsaga.schema", Run: c.CheckSchema})
	}
	return cs
}

// resumed is an event type a Resume resumes sagas on.
type resumed struct{ t reflect.Type }

// Resume registers the Resumer of event type E with the mediator: an E
// that arrives, through an fxbus.Subscribe of another service's topic or
// emitted in this process, resumes the sagas waiting for it (see Await).
// A saga registered with Register that waits for an E without a Resume
// fails fx.New, saying so.
func Resume[E any]() fx.Option {
	return fx.Options(
		fxcqrs.AsEventHandler(func(r *Runner) *Resumer[E] { return &Resumer[E]{binding{r}} }),
		fx.Provide(fx.Annotate(func() resumed { return resumed{reflect.TypeFor[E]()} }, fx.ResultTags(`group:"fxsaga.resumed"`))),
	)
}

// Config configures Module. Every field is optional.
type Config struct {
	// Runner configures the runner. Its clock (RunnerConfig.Now) defaults
	// to the outbox's (fxoutbox.Config.Now) when the graph has an
	// fxoutbox.Config, so that a test's fake clock is given once.
	Runner RunnerConfig `json:"runner" yaml:"runner"`
	// Tables names SQLStore's tables. Default: Tables' defaults.
	Tables Tables `json:"tables" yaml:"tables"`
	// Lease is how long SQLStore's replica owns a saga it drives before
	// another replica may claim it, renewed by every save. Default 30s.
	Lease time.Duration `json:"lease" yaml:"lease"`
	// RecoveryInterval is how often unfinished sagas are looked for.
	// Default 30s.
	RecoveryInterval time.Duration `json:"recoveryInterval" yaml:"recoveryInterval"`
}

func (c Config) recoveryInterval() time.Duration {
	if c.RecoveryInterval <= 0 {
		return 30 * time.Second
	}
	return c.RecoveryInterval
}

// Register provides a saga definition to fx: constructor returns a
// *Saga[C] (its steps are its dependencies), which handlers can inject to
// Run, and which Module recovers.
func Register[C any](constructor any) fx.Option {
	return fx.Options(
		fx.Provide(constructor),
		fx.Provide(fx.Annotate(func(s *Saga[C]) Definition { return s }, fx.ResultTags(`group:"fxsaga.sagas"`))),
	)
}

type runnerParams struct {
	fx.In

	Mediator *fxcqrs.Mediator
	Store    Store
	SQL      *sqlOfGraph
	Config   Config           `optional:"true"`
	Outbox   fxoutbox.Config  `optional:"true"`
	Tenancy  *fxoutbox.Outbox `optional:"true"`
	Logger   *zap.Logger      `optional:"true"`
	Observer fxcqrs.Observer  `optional:"true"`
}

func provideRunner(p runnerParams) *Runner {
	cfg := p.Config.Runner
	if cfg.Observer == nil {
		cfg.Observer = p.Observer
	}
	if cfg.Now == nil {
		cfg.Now = p.Outbox.Now // nil without one: NewRunner's default
	}
	if cfg.Tenancy == nil && p.Tenancy != nil {
		cfg.Tenancy = p.Tenancy // each tenant's store, once the outbox has them
	}
	if sql, ok := p.Store.(*SQL); ok {
		p.SQL.store.Store(sql)
	}
	return NewRunner(p.Mediator, p.Store, cfg, p.Logger)
}

// sqlOfGraph is the graph's Store when it is an *SQL, known once the
// runner is made (during fx.New, as Module's Invoke needs the runner),
// for the tenant migration the outbox runs from its Start on. The
// migration cannot take the Store itself: a Store that needs the outbox
// would close a cycle through the outbox's migrations.
type sqlOfGraph struct{ store atomic.Pointer[SQL] }

// tenantMigration is the TenantMigration Module gives the outbox: the
// graph's SQL store's tables, in each tenant's store; nothing for a
// Store of another kind (NewMemory's, an application's).
func tenantMigration(g *sqlOfGraph) fxoutbox.TenantMigration {
	return func(ctx context.Context, ts fxoutbox.TenantStore) error {
		s := g.store.Load()
		if s == nil {
			return nil
		}
		if ts.Dialect != s.d {
			// A tenant's sagas are written in its store by the SQL store's
			// statements, quoted and numbered for its own dialect.
			return fmt.Errorf("fxsaga: the store's dialect is %v, the saga store's %v: a tenant's sagas are written in its store with the saga store's statements, so every tenant store needs its dialect", ts.Dialect, s.d)
		}
		return TenantMigration(s.tables)(ctx, ts)
	}
}

// SQLStore keeps the sagas on the outbox's database, under fx: it
// provides the Store as the SQL store of the graph's *sql.DB, of the
// dialect of its fxoutbox.Config, with Config's Tables and Lease and the
// outbox's clock. With it an application names its database and its
// dialect once, for the outbox:
//
//	fx.New(fxcqrs.Module, fxbus.Module, fxoutbox.Module, fxsaga.Module, fxsaga.SQLStore,
//		fx.Supply(db, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL}), …)
//
// Without fx, or with another database, provide a Store yourself
// (NewSQL, NewMemory). With tenant stores (fxoutbox.Config.TenantStores)
// the saga store's database holds the default tenant's sagas, each
// tenant's live in its store, and Module migrates the saga tables into
// every tenant's store for an *SQL from either (see Module).
var SQLStore = fx.Provide(provideSQLStore)

type sqlStoreParams struct {
	fx.In

	DB     *sql.DB
	Outbox fxoutbox.Config
	Config Config `optional:"true"`
}

func provideSQLStore(p sqlStoreParams) (Store, error) {
	st, err := NewSQL(p.DB, p.Outbox.Dialect, p.Config.Tables, p.Config.Lease)
	if err != nil {
		return nil, err
	}
	if p.Outbox.Now != nil {
		st.now = p.Outbox.Now
	}
	return st, nil
}

type recoveryStateParams struct {
	fx.In

	Runner *Runner
	Config Config `optional:"true"`
}

func newRecovery(p recoveryStateParams) *recovery {
	return &recovery{now: p.Runner.now, interval: p.Config.recoveryInterval()}
}

type recoveryParams struct {
	fx.In

	Lifecycle fx.Lifecycle
	Runner    *Runner
	Store     Store
	Config    Config       `optional:"true"`
	Logger    *zap.Logger  `optional:"true"`
	Sagas     []Definition `group:"fxsaga.sagas"`
	Resumed   []resumed    `group:"fxsaga.resumed"`
	Recovery  *recovery
}

// recoverRegistered adds the sagas registered with Register to the
// runner, once it knows they can run, and recovers them in the background
// while the application runs.
func recoverRegistered(p recoveryParams) error {
	if err := checkNames(p.Sagas); err != nil {
		return err
	}
	if err := p.Runner.Add(p.Sagas...); err != nil {
		return err
	}
	slices.SortFunc(p.Sagas, func(a, b Definition) int { return strings.Compare(a.Name(), b.Name()) })
	if err := checkResumed(p.Sagas, p.Resumed); err != nil {
		return err
	}
	loop := newRecoveryLoop(p.Runner, p.Store, p.Sagas, p.Config.recoveryInterval(), p.Logger, p.Recovery)
	p.Lifecycle.Append(fx.Hook{OnStart: loop.start, OnStop: loop.stop})
	return nil
}

// checkNames returns the first registered saga that cannot run, or the
// first name two sagas share.
func checkNames(sagas []Definition) error {
	names := map[string]bool{}
	for _, s := range sagas {
		if err := s.definitionError(); err != nil {
			return err
		}
		if names[s.Name()] {
			return fmt.Errorf("fxsaga: two sagas are named %q", s.Name())
		}
		names[s.Name()] = true
	}
	return nil
}

// checkResumed says, for each saga, each event type it waits for that no
// Resume resumes: such a saga would wait until its deadline every time.
func checkResumed(sagas []Definition, resumed []resumed) error {
	resumes := map[reflect.Type]bool{}
	for _, r := range resumed {
		resumes[r.t] = true
	}
	var missing []error
	for _, s := range sagas {
		for _, t := range s.awaited() {
			if !resumes[t] {
				missing = append(missing, fmt.Errorf("fxsaga: saga %s waits for %v, but nothing resumes it: add fxsaga.Resume[%v]() to the application", s.Name(), t, t))
			}
		}
	}
	return errors.Join(missing...)
}
