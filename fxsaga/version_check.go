package fxsaga

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// StoredContext is how many unfinished sagas of one definition have a
// stored context of one version (see SQL.ContextVersions).
type StoredContext struct {
	// Saga is the definition's name.
	Saga string `json:"saga"`
	// Version is their context's version (Saga.Version).
	Version int `json:"version"`
	// Sagas is how many.
	Sagas int64 `json:"sagas"`
}

// contextVersioner is a store that lists its unfinished sagas by
// definition and context version: SQL does.
type contextVersioner interface {
	ContextVersions(ctx context.Context) ([]StoredContext, error)
}

// ContextVersions lists the unfinished sagas (running, compensating,
// waiting) by definition and context version, from the indexed column,
// never from their contexts: in ctx's transaction when it has one (a
// tenant's store's).
func (s *SQL) ContextVersions(ctx context.Context) ([]StoredContext, error) {
	rows, err := s.conn(ctx).QueryContext(ctx, "SELECT name, context_version, COUNT(*) FROM "+quote(s.d, s.tables.Sagas)+
		" WHERE status IN ('RUNNING', 'COMPENSATING', 'WAITING') GROUP BY name, context_version ORDER BY name, context_version")
	if err != nil {
		return nil, fmt.Errorf("fxsaga: ContextVersions: %w", err)
	}
	defer rows.Close()
	var out []StoredContext
	for rows.Next() {
		var c StoredContext
		if err := rows.Scan(&c.Saga, &c.Version, &c.Sagas); err != nil {
			return nil, fmt.Errorf("fxsaga: ContextVersions: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// UnreachableContext is unfinished sagas whose stored context their
// definition cannot read: Reason is what each is set aside with when it
// is resumed or recovered.
type UnreachableContext struct {
	StoredContext
	// Reason is why.
	Reason string `json:"reason"`
}

// UnreachableContexts lists the unfinished sagas of sagas, stored in
// store, whose context no upcaster brings to their definition's version
// (Saga.Version), from the indexed column (ContextVersions). The saga
// module's start logs them.
func UnreachableContexts(ctx context.Context, store *SQL, sagas ...Definition) ([]UnreachableContext, error) {
	return unreachable(ctx, store, sagas)
}

func unreachable(ctx context.Context, store contextVersioner, sagas []Definition) ([]UnreachableContext, error) {
	stored, err := store.ContextVersions(ctx)
	if err != nil {
		return nil, err
	}
	defs := map[string]Definition{}
	for _, d := range sagas {
		defs[d.Name()] = d
	}
	var out []UnreachableContext
	for _, c := range stored {
		if d := defs[c.Saga]; d != nil {
			if reason := d.contextReaches(c.Version); reason != "" {
				out = append(out, UnreachableContext{StoredContext: c, Reason: reason})
			}
		}
	}
	return out, nil
}

// checkContexts logs, at error level, the unfinished sagas of the
// registered definitions whose stored context no upcaster brings to the
// definition's version: each is set aside with the reason when it is
// resumed or recovered, and an operator should hear of it at the deploy.
// It reads each tenant's store (see Tenancy); one that fails, other than
// the default tenant's, is logged and does not stop the start.
func (l *recoveryLoop) checkContexts(ctx context.Context) error {
	cv, ok := l.runner.store.(contextVersioner)
	if !ok || len(l.sagas) == 0 {
		return nil
	}
	for _, tenant := range l.runner.stores() {
		var bad []UnreachableContext
		err := l.runner.inStore(ctx, tenant, func(ctx context.Context) (err error) {
			bad, err = unreachable(ctx, cv, l.sagas)
			return err
		})
		switch {
		case err != nil && tenant == "":
			return err
		case err != nil:
			l.log.Error("the stored contexts of a tenant's sagas could not be checked", zap.String("tenant", tenant), zap.Error(err))
		}
		for _, c := range bad {
			l.log.Error("unfinished sagas whose stored context no upcaster reaches: each is set aside with this reason when it is resumed or recovered; register the missing fxsaga.ContextUpcaster",
				zap.String("saga", c.Saga), zap.Int("version", c.Version), zap.Int64("sagas", c.Sagas), zap.String("reason", c.Reason), zap.String("tenant", tenant))
		}
	}
	return nil
}
