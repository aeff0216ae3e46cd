package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// Tenants, in the shared mode (one database, each row's tenant in its
// metadata, which the schema computes into the indexed column
// msg_tenant). An Admin reads and repairs every tenant's rows; ForTenant
// gives one that reads and repairs one tenant's alone. The default
// tenant is "": "no tenant selected" is an Admin not made by ForTenant
// (or a DeadLetterFilter whose Tenant is nil), never the empty string.

// ForTenant returns a copy of a that reads and repairs tenant's rows
// alone ("": the default tenant's): its lists, counts, backlog,
// schedules, parked keys and repairs are that tenant's, and its Replay,
// Discard and Release skip the letters of every other tenant, as they
// skip unknown ids. Lag, Leases and the bus's side (RecordDeadLetter,
// the parking) stay the outbox's, every tenant's.
func (a *Admin) ForTenant(tenant string) *Admin {
	c := *a
	c.tenant = &tenant
	return &c
}

// Tenant returns the tenant a reads and repairs, and whether it is one
// tenant's (ForTenant) rather than every tenant's.
func (a *Admin) Tenant() (tenant string, one bool) {
	if a.tenant == nil {
		return "", false
	}
	return *a.tenant, true
}

// scope appends to where (a WHERE clause, or "") the condition of a's
// tenant, if it has one, and returns it with args and the tenant's.
func (a *Admin) scope(where string, args ...any) (string, []any) {
	if a.tenant == nil {
		return where, args
	}
	if where == "" {
		return " WHERE msg_tenant = ?", append(args, *a.tenant)
	}
	return where + " AND msg_tenant = ?", append(args, *a.tenant)
}

// Tenants returns the tenants that have dead letters (not discarded) or
// scheduled messages now, sorted, the default tenant ("") among them when
// it has any: what a repair tool offers to choose from in the shared
// mode. It reads the tenant index of those tables, whose rows are few;
// not the outbox's backlog, which may be millions of rows in an incident
// and has no index led by the tenant (Backlog of ForTenant reads one
// tenant's). An Admin for one tenant returns at most that one.
func (a *Admin) Tenants(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	for _, src := range []struct{ table, where string }{
		{a.t.Scheduled, ""},
		{a.t.DeadLetters, " WHERE discarded_ns = 0"},
		{a.t.InboundDead, " WHERE discarded_ns = 0"},
	} {
		where, args := a.scope(src.where)
		rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT DISTINCT msg_tenant FROM "+schema.Quote(a.d, src.table)+where), args...)
		if err != nil {
			return nil, fmt.Errorf("fxoutbox: tenants: %w", err)
		}
		for rows.Next() {
			var t string
			if err := rows.Scan(&t); err != nil {
				_ = rows.Close()
				return nil, fmt.Errorf("fxoutbox: tenants: %w", err)
			}
			seen[t] = true
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("fxoutbox: tenants: %w", err)
		}
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	slices.Sort(out)
	return out, nil
}
