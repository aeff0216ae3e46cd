package relay

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// One relay for every tenant's store: the default store (Params.DB) and
// the tenants' stores Params.Stores lists, each a part of the relay with
// its own statements (a schema's tables named in it), leases (in its own
// leases table), hints and progress. A pass walks the parts from the one
// after the last pass's first, each for one bounded turn.

// Store is a tenant's store the relay serves: its rows' database, the
// statements of its tables, and a Holder of the relay's leases in its
// leases table.
type Store struct {
	ID      string
	DB      *sql.DB
	Queries schema.Queries
	Leases  *lease.Holder
}

// part is one store as the relay serves it.
type part struct {
	id       string
	db       *sql.DB
	q        schema.Queries
	leases   *lease.Holder
	sender   *sender
	draining bool // it left the source: sent until its outbox is empty, then dropped (the relay goroutine's)

	backoff time.Duration // after its last failures; 0 after a turn that did not fail (the relay goroutine's)
	retryAt time.Time     // by now: a tenant's store that failed is passed over until then

	hinted       map[schema.Lane]struct{} // lanes this process's commits wrote to since the last pass (under hintMu)
	discoveredAt time.Time                // by now: when a pass last read the topics from the table (the relay goroutine's)
	discover     atomic.Bool              // rows came that no commit announced (see Discover): read the table next pass
}

func (r *Relay) newPart(st Store) *part {
	s := r.proto
	s.db, s.q, s.leases, s.progress = st.DB, st.Queries, st.Leases, map[schema.Lane]*progress{}
	return &part{id: st.ID, db: st.DB, q: st.Queries, leases: st.Leases, sender: &s, hinted: map[schema.Lane]struct{}{}}
}

// storeSource is where the relay learns its stores, and the connection
// budget it takes a place of per store turn.
type storeSource struct {
	list    func(ctx context.Context) ([]Store, error)
	drained func(id string)
	acquire func(ctx context.Context) (func(), error)

	readAt time.Time // by now: when list was last asked (the relay goroutine's)
	dirty  bool      // a commit wrote to a store not served yet (under hintMu)
}

// take takes a place in the connection budget.
func (s *storeSource) take(ctx context.Context) (func(), error) {
	if s.acquire == nil {
		return func() {}, nil
	}
	return s.acquire(ctx)
}

// refreshStores asks for the stores once per poll interval (or at once
// when a commit wrote to a store it does not serve): a store that came
// is served from this pass; one that left is drained; one that returned
// is served again.
func (r *Relay) refreshStores(ctx context.Context) error {
	if r.stores.list == nil {
		return nil
	}
	now := r.now()
	r.hintMu.Lock()
	dirty := r.stores.dirty
	r.stores.dirty = false
	r.hintMu.Unlock()
	if !dirty && !r.stores.readAt.IsZero() && now.Sub(r.stores.readAt) < r.cfg.PollInterval && !now.Before(r.stores.readAt) {
		return nil
	}
	r.stores.readAt = now
	// Bounded as a turn's step is: a source that hangs (the application's
	// tenants table, locked) must not hold every store's delivery.
	lctx, cancel := r.step(ctx)
	list, err := r.stores.list(lctx)
	err = stepped(lctx, err)
	cancel()
	if err != nil && len(list) == 0 {
		return err
	}
	// With an error beside a list (one entry of the source wrong, a store
	// that could not be made): the stores listed are served, new ones
	// included, and none leaves for want of its entry this time.
	r.hintMu.Lock()
	defer r.hintMu.Unlock()
	live := make(map[string]bool, len(list))
	for _, st := range list {
		live[st.ID] = true
		if p := r.byID[st.ID]; p != nil {
			p.draining = false // it returned, or never left
			continue
		}
		p := r.newPart(st)
		r.parts = append(r.parts, p)
		r.byID[st.ID] = p
	}
	for _, p := range r.parts {
		if err == nil && p != r.def && !live[p.id] && !p.draining {
			p.draining = true
			p.discoveredAt = time.Time{} // look at its table: what waits there is still sent
			r.log.Info("relay: a tenant left the source: its outbox is drained, then no longer polled", zap.String("tenant", p.id))
		}
	}
	return err
}

// drained drops p, which left the source and whose outbox is empty: its
// leases are given back and it is polled no more.
func (r *Relay) drained(ctx context.Context, p *part) {
	if err := p.leases.ReleaseAll(ctx); err != nil {
		r.log.Warn("relay: a drained tenant's leases not released; they expire", zap.String("tenant", p.id), zap.Error(err))
	}
	r.hintMu.Lock()
	for i, q := range r.parts {
		if q == p {
			r.parts = append(r.parts[:i:i], r.parts[i+1:]...)
			break
		}
	}
	delete(r.byID, p.id)
	r.hintMu.Unlock()
	r.log.Info("relay: a tenant that left the source is drained: no longer polled", zap.String("tenant", p.id))
	if r.stores.drained != nil {
		r.stores.drained(p.id)
	}
}

// windowEnd is the earliest of the stores' progress windows' ends (see
// sender.windowEnd).
func (r *Relay) windowEnd(ended bool) <-chan time.Time {
	r.hintMu.Lock()
	parts := r.parts
	r.hintMu.Unlock()
	if len(parts) == 1 {
		return parts[0].sender.windowEnd(ended)
	}
	var at time.Time
	now := r.now()
	for _, p := range parts {
		if p != r.def && now.Before(p.retryAt) {
			// It waits for its backoff (its database failed or hangs):
			// its windows are recorded in its next turn, which a window
			// that ended would otherwise ask for at once, pass after
			// pass, until then.
			continue
		}
		for _, pr := range p.sender.progress {
			if end := pr.since.Add(r.cfg.ProgressInterval); at.IsZero() || end.Before(at) {
				at = end
			}
		}
	}
	if at.IsZero() {
		return nil
	}
	wait := at.Sub(r.sender.wallNow())
	if wait <= 0 && !ended {
		return nil
	}
	return r.sender.wallAfter(max(wait, 0))
}

// storeError names the tenant whose store err came from.
func storeError(id string, err error) error {
	if id == "" || err == nil {
		return err
	}
	return fmt.Errorf("tenant %q: %w", id, err)
}

// storeFailed logs a tenant's store's failed turn and passes the store
// over for a backoff of its own, doubling up to Config.RetryMax: a
// tenant's database that is down, or a tenant's rows the broker refuses,
// does not hold the other tenants back with the relay's backoff.
func (r *Relay) storeFailed(p *part, err error) {
	p.backoff = min(max(2*p.backoff, r.cfg.RetryInitial), r.cfg.RetryMax)
	p.retryAt = r.now().Add(p.backoff)
	r.logFailureOn(p.db, storeError(p.id, err), p.backoff)
}
