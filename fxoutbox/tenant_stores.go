package fxoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/admin"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/upkeep"
	"go.uber.org/zap"
)

// The stores the outbox serves: the default tenant's (the outbox's own
// database) and, with Config.TenantStores, each tenant's, read from the
// source at Start and again once per poll interval by the relay.

// store is one tenant's store as the outbox serves it.
type store struct {
	id      string
	db      *sql.DB
	d       Dialect
	schema  string         // a PostgreSQL schema of db, or ""
	q       schema.Queries // its tables', named in its schema
	admin   *Admin
	leases  *lease.Holder // the relay's, in its leases table
	removed atomic.Bool   // it left the source: drained, refused new work

	// Beside the relay, for this store alone (nil for the default store,
	// the outbox's own).
	promoter *upkeep.SchedulePromoter
	cleaner  *upkeep.InboxCleaner
}

// stores is the outbox's stores, by tenant id.
type stores struct {
	o   *Outbox
	src TenantStores // nil: the shared mode, every tenant in the default store

	mu      sync.RWMutex
	def     *store
	byID    map[string]*store // the tenants', live and draining
	order   []string          // the live tenants' ids, in the source's order
	started bool              // upkeep runs for the stores added
	served  bool              // a refresh succeeded (Start's): the relay runs, and a new store is migrated beside it

	lateMigrations               // of the stores that appear while the relay runs: tenant_migrations.go
	reads          atomic.Uint64 // for tests: how many times the source was read
}

// ids is the live tenants' ids, the default first.
func (s *stores) ids() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]string{""}, s.order...)
}

// byTenant is the store of tenant: the default store for "" and, in the
// shared mode, for every tenant. A tenant that left the source is
// refused unless draining says its store may still be used (the relay's
// delivery of rows already committed there, the admin).
func (s *stores) byTenant(tenant string, draining bool) (*store, error) {
	if tenant == "" || s.src == nil {
		return s.def, nil
	}
	s.mu.RLock()
	st := s.byID[tenant]
	s.mu.RUnlock()
	if st == nil || (st.removed.Load() && !draining) {
		return nil, fmt.Errorf("%w %s: not among Config.TenantStores", fxbus.ErrUnknownTenant, quoteTenant(tenant))
	}
	return st, nil
}

// of is the store of ctx's tenant (fxbus.TenantOf) for a unit of work:
// a removed tenant's store only for the relay's own delivery of its rows.
func (s *stores) of(ctx context.Context) (*store, error) {
	_, local := deliveryOf(ctx)
	return s.byTenant(fxbus.TenantOf(ctx), local)
}

// quoteTenant is a tenant id for an error: escaped and cut after 64
// bytes, so that an untrusted 10 KB id does not become a 10 KB message.
func quoteTenant(id string) string {
	if len(id) > 64 {
		return fmt.Sprintf("%q…", id[:64])
	}
	return fmt.Sprintf("%q", id)
}

// newStore builds the store of ts (checked), without migrating it.
func (s *stores) newStore(ts TenantStore) (*store, error) {
	o := s.o
	st := &store{id: ts.ID, db: ts.DB, d: ts.Dialect, schema: ts.Schema}
	if st.db == nil {
		st.db, st.d = o.db, o.cfg.Dialect
	}
	if st.d == 0 {
		st.d = o.cfg.Dialect
	}
	if st.schema != "" && st.d != PostgreSQL {
		return nil, fmt.Errorf("fxoutbox: tenant %s: a schema per tenant needs PostgreSQL; on %v give each tenant a database", quoteTenant(ts.ID), st.d)
	}
	if err := checkSingleWriter(st.db, st.d); err != nil {
		return nil, fmt.Errorf("fxoutbox: tenant %s: %w", quoteTenant(ts.ID), err)
	}
	st.q = schema.NewQueries(st.d, schema.InSchema(o.cfg.Tables, st.schema))
	st.leases = lease.NewHolder(st.db, leaseStatements(st.q), o.owner, relay.WithDefaults(o.cfg.Relay).Lease, o.cfg.Now)
	adm, err := admin.New(st.db, st.d, o.cfg.Tables, o.cfg.Now)
	if err != nil {
		return nil, err
	}
	if st.schema != "" {
		adm = adm.InSchema(st.schema)
	}
	st.admin = adm.WithLanes(o.cfg.Relay)
	return st, nil
}

// upkeep makes st's schedule promoter and inbox cleaner, not started.
func (s *stores) upkeep(st *store) {
	o := s.o
	rc := relay.WithDefaults(o.cfg.Relay)
	st.promoter = upkeep.NewSchedulePromoter(upkeep.PromoterParams{
		DB: st.db, Queries: st.q, Sender: discoverIn{o.relay, st.id}, Acquire: o.acquire(), Log: o.log.With(zap.String("tenant", st.id)),
		Now: o.cfg.Now, After: o.cfg.After,
		Leases: lease.NewHolder(st.db, leaseStatements(st.q), o.owner, rc.Lease, o.cfg.Now),
		Config: upkeep.PromoterConfig{
			PollInterval: rc.PollInterval, BatchSize: rc.BatchSize, RetryInitial: rc.RetryInitial, RetryMax: rc.RetryMax,
		},
	})
	st.cleaner = upkeep.NewInboxCleaner(st.db, st.q, upkeep.InboxCleanerConfig{Retention: o.cfg.InboxRetention, Acquire: o.acquire()},
		o.log.With(zap.String("tenant", st.id)), o.cfg.Now, o.cfg.After)
}

// acquire is the connection budget's take for the upkeep services, nil
// without a budget.
func (o *Outbox) acquire() upkeep.Acquire {
	if o.budget == nil {
		return nil
	}
	return o.budget.take
}

// discoverIn is the relay as a store's promoter tells it of moved rows.
type discoverIn struct {
	r  *relay.Relay
	id string
}

func (d discoverIn) Discover() { d.r.DiscoverIn(d.id) }

func leaseStatements(q schema.Queries) lease.Statements {
	return lease.Statements{Renew: q.RenewLease, Take: q.TakeLease, Drop: q.DropLease, DropAll: q.DropLeases}
}

// migrate brings st's schema to this code's version, under the lock
// Migrate takes, and runs the TenantMigrations on it, under one place
// of the connection budget.
func (s *stores) migrate(ctx context.Context, st *store) error {
	release, err := s.o.budget.take(ctx)
	if err != nil {
		return fmt.Errorf("fxoutbox: tenant %s: %w", quoteTenant(st.id), err)
	}
	defer release()
	if err := schema.MigrateIn(ctx, st.db, st.d, s.o.cfg.Tables, st.schema); err != nil {
		return fmt.Errorf("fxoutbox: tenant %s: %w", quoteTenant(st.id), err)
	}
	return runTenantMigrations(ctx, s.o.cfg.TenantMigrations, TenantStore{ID: st.id, DB: st.db, Dialect: st.d, Schema: st.schema})
}

// runTenantMigrations runs ms on ts, in order, and stops at the first
// failure, naming the tenant.
func runTenantMigrations(ctx context.Context, ms []TenantMigration, ts TenantStore) error {
	for _, m := range ms {
		if err := m(ctx, ts); err != nil {
			return fmt.Errorf("fxoutbox: tenant %s: %w", quoteTenant(ts.ID), err)
		}
	}
	return nil
}

// refresh reads the source and serves what it says: a tenant that came
// is checked, migrated and served; one that left is marked removed (the
// relay drains its store); one that returned is served again. A tenant
// whose store is wrong or cannot be migrated is left out, with an error
// (it is tried again next time); the others are served. It returns the
// live tenants' stores, for the relay.
//
// Start's refresh migrates every store before it returns. Once the
// relay runs, a store that came is migrated on a goroutine of its own
// (migrateLater) and served from the first refresh after its migration
// ended, which wakes the relay: its migration does not hold the
// others' delivery.
func (s *stores) refresh(ctx context.Context) ([]relay.Store, error) {
	if s.src == nil {
		return nil, nil
	}
	list, err := s.src.Stores(ctx)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: TenantStores.Stores: %w", err)
	}
	s.reads.Add(1)
	s.mu.RLock()
	beside := s.served
	s.mu.RUnlock()
	var errs []error
	live := make([]*store, 0, len(list))
	seen := map[string]bool{}
	for _, ts := range list {
		if err := checkStore(ts); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[ts.ID] {
			errs = append(errs, fmt.Errorf("fxoutbox: tenant %s: listed twice by TenantStores", quoteTenant(ts.ID)))
			continue
		}
		seen[ts.ID] = true
		s.mu.RLock()
		st := s.byID[ts.ID]
		s.mu.RUnlock()
		switch {
		case st != nil:
		case beside:
			if st, err = s.migrated(ts); err != nil {
				errs = append(errs, err)
			}
			if st == nil {
				continue // served once migrated
			}
		default:
			if st, err = s.newStore(ts); err == nil {
				err = s.migrate(ctx, st)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
		}
		live = append(live, st)
	}
	s.mu.Lock()
	if len(errs) == 0 {
		s.served = true
	}
	order := make([]string, len(live))
	out := make([]relay.Store, len(live))
	for i, st := range live {
		order[i] = st.id
		out[i] = relay.Store{ID: st.id, DB: st.db, Queries: st.q, Leases: st.leases}
		if s.byID[st.id] == nil || st.removed.Load() || st.promoter == nil {
			s.byID[st.id] = st
			st.removed.Store(false)
			if st.promoter == nil {
				s.upkeep(st)
				if s.started {
					st.promoter.Start()
					st.cleaner.Start()
				}
			}
		}
	}
	for id, st := range s.byID {
		if !seen[id] && !st.removed.Load() {
			st.removed.Store(true) // refused new work from now; the relay drains it
		}
	}
	s.order = order
	s.mu.Unlock()
	return out, errors.Join(errs...)
}

// drained stops the upkeep of the store id, which left the source and
// whose outbox the relay emptied: its schedules due later, its dead
// letters and its inbox stay in it, untouched, for the admin or for the
// tenant's return.
func (s *stores) drained(id string) {
	s.mu.Lock()
	st := s.byID[id]
	if st == nil || st.promoter == nil {
		s.mu.Unlock()
		return
	}
	promoter, cleaner := st.promoter, st.cleaner
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := errors.Join(promoter.Close(ctx), cleaner.Close(ctx)); err != nil {
		s.o.log.Warn("fxoutbox: a drained tenant's upkeep did not stop in time", zap.String("tenant", id), zap.Error(err))
	}
	s.mu.Lock()
	if st.removed.Load() && st.promoter == promoter { // it did not return meanwhile
		st.promoter, st.cleaner = nil, nil
	}
	s.mu.Unlock()
}

// start starts the upkeep of every store known; stop stops it.
func (s *stores) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = true
	for _, st := range s.byID {
		if st.promoter != nil {
			st.promoter.Start()
			st.cleaner.Start()
		}
	}
}

func (s *stores) stop(ctx context.Context) error {
	type services struct {
		promoter *upkeep.SchedulePromoter
		cleaner  *upkeep.InboxCleaner
	}
	s.mu.Lock()
	s.started = false
	s.closed = true // no migration starts from now
	if s.endMigrate != nil {
		s.endMigrate()
	}
	var all []services
	for _, st := range s.byID {
		if st.promoter != nil {
			all = append(all, services{st.promoter, st.cleaner})
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, u := range all {
		errs = append(errs, u.promoter.Close(ctx), u.cleaner.Close(ctx))
	}
	migrated := make(chan struct{})
	go func() {
		s.migrations.Wait()
		close(migrated)
	}()
	select {
	case <-migrated:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("fxoutbox: a tenant's migration still running: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// scheduledAt tells the promoter of the store id that a commit scheduled
// a row due at dueNs.
func (s *stores) scheduledAt(id string, dueNs int64) {
	if id == "" {
		s.o.promoter.ScheduledAt(dueNs)
		return
	}
	s.mu.RLock()
	st := s.byID[id]
	var p *upkeep.SchedulePromoter
	if st != nil {
		p = st.promoter
	}
	s.mu.RUnlock()
	if p != nil {
		p.ScheduledAt(dueNs)
	}
}

// MigrateAll runs Migrate on every store src lists, in turn (a schema
// per tenant: with the schema as the search_path, so that the outbox's
// tables are created in it; the schema itself, like a tenant's database,
// is the application's to create). progress, if not nil, is told after
// each store, with how many are done of how many. It stops at the first
// failure, with an error that names the tenant. d is the dialect of the
// stores that do not say theirs; db is the database of the stores in a
// schema of the outbox's database (TenantStore.DB nil).
func MigrateAll(ctx context.Context, db *sql.DB, src TenantStores, d Dialect, t Tables, progress func(tenant string, done, total int), ms ...TenantMigration) error {
	if src == nil {
		return errors.New("fxoutbox.MigrateAll: nil TenantStores")
	}
	list, err := src.Stores(ctx)
	if err != nil {
		return fmt.Errorf("fxoutbox.MigrateAll: TenantStores.Stores: %w", err)
	}
	for i, ts := range list {
		if err := checkStore(ts); err != nil {
			return fmt.Errorf("fxoutbox.MigrateAll: %w", err)
		}
		sdb, sd := ts.DB, ts.Dialect
		if sdb == nil {
			sdb = db
		}
		if sd == 0 {
			sd = d
		}
		if sdb == nil {
			return fmt.Errorf("fxoutbox.MigrateAll: tenant %s: in a schema of the outbox's database, which was not given", quoteTenant(ts.ID))
		}
		if ts.Schema != "" && sd != PostgreSQL {
			return fmt.Errorf("fxoutbox.MigrateAll: tenant %s: a schema per tenant needs PostgreSQL", quoteTenant(ts.ID))
		}
		if err := schema.MigrateIn(ctx, sdb, sd, t, ts.Schema); err != nil {
			return fmt.Errorf("fxoutbox.MigrateAll: tenant %s (%d of %d): %w", quoteTenant(ts.ID), i+1, len(list), err)
		}
		for _, m := range ms {
			if err := m(ctx, TenantStore{ID: ts.ID, DB: sdb, Dialect: sd, Schema: ts.Schema}); err != nil {
				return fmt.Errorf("fxoutbox.MigrateAll: tenant %s (%d of %d): %w", quoteTenant(ts.ID), i+1, len(list), err)
			}
		}
		if progress != nil {
			progress(ts.ID, i+1, len(list))
		}
	}
	return nil
}

// budget is Config.MaxConnections: a place taken before a transaction
// begins and given back at its end, across every store.
type budget struct{ places chan struct{} }

func newBudget(n int) *budget {
	if n <= 0 {
		return nil
	}
	return &budget{places: make(chan struct{}, n)}
}

// take waits for a place, on ctx: its end is the error, and nothing
// began. The function it returns gives the place back, once.
func (b *budget) take(ctx context.Context) (func(), error) {
	if b == nil {
		return func() {}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fxoutbox: connection budget (Config.MaxConnections): %w", err)
	}
	select {
	case b.places <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-b.places }) }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("fxoutbox: connection budget (Config.MaxConnections) spent: %w", ctx.Err())
	}
}
