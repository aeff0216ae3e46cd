package fxoutbox

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// lateMigrations is the stores' part that migrates the stores that
// appear while the relay runs, a goroutine each, off the relay's: a long
// migration, or a migration lock held elsewhere, must not stall every
// tenant's delivery. Start's refresh migrates the stores listed then
// itself (stores.migrate), before the relay runs.
type lateMigrations struct {
	migrating  map[string]*migration // by tenant id (under stores.mu)
	closed     bool                  // stop was called: no migration starts (under stores.mu)
	migrations sync.WaitGroup
	migrateCtx context.Context // ends at stop: the migrations in hand end with it
	endMigrate context.CancelFunc
	migrateFor time.Duration // how long a migration may take; 0: tenantMigrationTimeout
	// At most migrationsAtOnce migrations at a time: the migration lock
	// is one per database (SQLite's per process), so more would each hold
	// a connection and a place of the budget while they queue for it, and
	// a burst of new tenants would starve the relay and every unit of
	// work; more than one, so that one that hangs (its TenantMigration,
	// a lock held elsewhere) does not hold every new store until it times
	// out.
	migrateOne chan struct{}
}

// migrationsAtOnce is how many stores that appeared are migrated at once
// beside the relay (see lateMigrations.migrateOne).
const migrationsAtOnce = 2

// tenantMigrationTimeout bounds the migration of a store that appeared
// while the relay runs: one that takes longer (its migration lock held
// by another process that hangs, a migration too long for a running
// service) is cancelled, logged and tried again at the next read of the
// source, so that no goroutine waits on it for good.
const tenantMigrationTimeout = time.Minute

// migration is the migration of a store that appeared, on its own
// goroutine: the store joins the relay's once it is done without error.
type migration struct {
	ts   TenantStore // as the source listed it
	st   *store
	done bool  // under stores.mu
	err  error // under stores.mu, once done
}

// migrateLater migrates st, which the source listed as ts, on a
// goroutine of its own, within tenantMigrationTimeout, and wakes the
// relay when it is done, which serves it then (see refresh). Called
// under s.mu; not after stop.
func (s *stores) migrateLater(ts TenantStore, st *store) {
	if s.migrateCtx == nil {
		s.migrateCtx, s.endMigrate = context.WithCancel(context.Background())
		s.migrating = map[string]*migration{}
		s.migrateOne = make(chan struct{}, migrationsAtOnce)
	}
	m := &migration{ts: ts, st: st}
	s.migrating[ts.ID] = m
	timeout := s.migrateFor
	if timeout <= 0 {
		timeout = tenantMigrationTimeout
	}
	ctx, one := s.migrateCtx, s.migrateOne
	s.migrations.Add(1)
	go func() {
		defer s.migrations.Done()
		var err error
		select {
		case one <- struct{}{}: // its turn: the timeout is its own migration's, not the queue's
			mctx, cancel := context.WithTimeout(ctx, timeout)
			err = safeMigrate(func() error { return s.migrate(mctx, st) })
			cancel()
			<-one
		case <-ctx.Done():
			err = ctx.Err()
		}
		s.mu.Lock()
		m.done, m.err = true, err
		s.mu.Unlock()
		switch {
		case ctx.Err() != nil:
			// The outbox stops: not a failure to report.
		case err != nil:
			s.o.log.Warn("fxoutbox: a tenant's store that appeared cannot be migrated; it is not served, and tried again at the next read of the tenant source",
				zap.String("tenant", ts.ID), zap.Duration("timeout", timeout), zap.Error(err))
		default:
			s.o.relay.WroteIn(ts.ID, nil) // a store it does not serve: it reads the source again at once
		}
	}()
}

// safeMigrate is migrate with a panic (a TenantMigration's) turned into
// an error: it runs on a goroutine of its own.
func safeMigrate(migrate func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("fxoutbox: a tenant's migration panicked: %v", v)
		}
	}()
	return migrate()
}

// migrated is the store of ts if its migration beside the relay is done:
// nil while it runs, or when it failed or the source now says another
// place (then it begins again: the failure was logged).
func (s *stores) migrated(ts TenantStore) (*store, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil
	}
	m := s.migrating[ts.ID]
	switch {
	case m != nil && !m.done:
		return nil, nil
	case m != nil && m.err == nil && m.ts == ts:
		delete(s.migrating, ts.ID)
		return m.st, nil
	}
	delete(s.migrating, ts.ID)
	st, err := s.newStore(ts)
	if err != nil {
		return nil, err
	}
	s.migrateLater(ts, st)
	return nil, nil
}
