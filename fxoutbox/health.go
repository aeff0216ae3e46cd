package fxoutbox

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/zap"
)

// The outbox's health checks, and its read API on its own clock (see
// Admin).

// Checks are the outbox's health checks (fxoutbox.Module registers them
// for fxcqrs.HealthModule):
//   - fxoutbox.schema, liveness: the database answers and its tables are
//     at the version this code needs (one read of the migrations table);
//   - fxoutbox.relay, readiness: the relay's lag (Lag: a row per topic)
//     is within Config.MaxLag. A poison message or a broker away makes a
//     replica unready, not dead: restarting it would not help. With
//     tenant stores, the lag of every store the outbox serves counts, the
//     worst winning and named by its tenant (see readyLag).
func (o *Outbox) Checks() []fxcqrs.Check {
	return []fxcqrs.Check{
		{Name: "fxoutbox.schema", Run: func(ctx context.Context) error {
			return CheckSchema(ctx, o.db, o.cfg.Dialect, o.cfg.Tables)
		}},
		{Name: "fxoutbox.relay", Readiness: true, Run: o.readyLag},
	}
}

// lagReaders is how many tenant stores readyLag reads at once: a store
// slow to answer does not hold the others' reads back past the check's
// deadline.
const lagReaders = 8

// readyLag is the relay's readiness: the worst lag of the default store
// and of every live tenant store within Config.MaxLag. The default store
// that cannot be read fails it, as before tenant stores: every tenant's
// work needs it. A tenant's store that cannot be read does not: every
// replica reads the same store, so failing would take them all out of
// service, every tenant's traffic with them, for the outage of one
// tenant's database, which sending traffic elsewhere cannot mend (and
// the relay already serves the other stores, backing off that one). It
// is logged with its tenant, each time, instead.
func (o *Outbox) readyLag(ctx context.Context) error {
	worst, err := o.admin.Lag(ctx)
	if err != nil {
		return err
	}
	worstTenant := ""
	var mu sync.Mutex
	var wg sync.WaitGroup
	places := make(chan struct{}, lagReaders)
	for _, st := range o.liveTenantStores() {
		wg.Add(1)
		places <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-places }()
			lag, err := st.admin.Lag(ctx)
			if err != nil {
				o.log.Warn("fxoutbox: readiness: a tenant's store cannot be read; its lag is not counted", zap.String("tenant", st.id), zap.Error(err))
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if lag > worst || lag == worst && worstTenant != "" && st.id < worstTenant {
				worst, worstTenant = lag, st.id
			}
		}()
	}
	wg.Wait()
	if worst <= o.cfg.MaxLag {
		return nil
	}
	if worstTenant == "" {
		return fmt.Errorf("the relay is %v behind, over Config.MaxLag (%v)", worst, o.cfg.MaxLag)
	}
	return fmt.Errorf("the relay is %v behind in tenant %s's store, over Config.MaxLag (%v)", worst, quoteTenant(worstTenant), o.cfg.MaxLag)
}

// liveTenantStores is the tenants' stores the outbox serves now, not
// those draining since they left the source.
func (o *Outbox) liveTenantStores() []*store {
	s := o.stores
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*store, 0, len(s.order))
	for _, id := range s.order {
		if st := s.byID[id]; st != nil {
			out = append(out, st)
		}
	}
	return out
}

// Backlog is Admin.Backlog.
func (o *Outbox) Backlog(ctx context.Context) ([]TopicBacklog, error) { return o.admin.Backlog(ctx) }

// Lag is Admin.Lag.
func (o *Outbox) Lag(ctx context.Context) (time.Duration, error) { return o.admin.Lag(ctx) }

// DeadLetters is Admin.DeadLetters.
func (o *Outbox) DeadLetters(ctx context.Context) ([]TopicDeadLetters, error) {
	return o.admin.DeadLetters(ctx)
}

// Scheduled is Admin.Scheduled.
func (o *Outbox) Scheduled(ctx context.Context) (ScheduledSummary, error) {
	return o.admin.Scheduled(ctx)
}
