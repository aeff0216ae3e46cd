package relay

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// Fair shares between a lane's tenants. A lane read in id order alone
// sends a noisy tenant's backlog before a quiet tenant's row committed
// after it: the quiet row waits for the backlog, pass after pass. When a
// lane holds the rows of more than one tenant, each batch is shared
// instead: every tenant waiting gets a turn at each place of the batch
// (its first row, then its second, ...) until the batch is full, so each
// of T tenants gets at least BatchSize/T rows of it (all it has, if
// fewer), and a share a tenant leaves unused goes to the others: a
// backlog still drains a full batch at a time.
//
// A key belongs to one tenant, and each tenant's share is its first rows
// not yet sent, in id order: its keys keep their order. A late commit
// (progress.go) is among its tenant's first rows not sent, so it goes
// before its key's next row, as in the lane read in id order.

// maxTenants is how many tenants of a lane one batch shares between at
// most (and at most BatchSize): with more, the next batch goes on from
// the first tenant left out, so that each has its turn. SQLite takes 500
// parts of a UNION ALL at most.
const maxTenants = 100

// batch reads l's next batch: in id order when one tenant has rows in l
// (as before the shares), else each tenant's share (fairRows). p is l's
// published rows not yet deleted, or nil.
func (s *sender) batch(ctx context.Context, l schema.Lane, p *progress) ([]row, error) {
	from, rotating := s.tenantsFrom[l]
	most := min(maxTenants, s.cfg.BatchSize)
	tenants, err := s.laneTenants(ctx, l, from, most+1)
	if err != nil {
		return nil, err
	}
	if len(tenants) > most { // the first left out starts the next batch's
		if s.tenantsFrom == nil {
			s.tenantsFrom = map[schema.Lane]string{}
		}
		s.tenantsFrom[l] = tenants[most]
		tenants = tenants[:most]
	} else {
		delete(s.tenantsFrom, l)
	}
	if !rotating && len(tenants) <= 1 {
		if p != nil {
			return s.rowsBeside(ctx, l, p)
		}
		return s.rows(ctx, l)
	}
	return s.fairRows(ctx, l, p, tenants)
}

// laneTenants returns up to n of l's tenants from the tenant from on, in
// order.
func (s *sender) laneTenants(ctx context.Context, l schema.Lane, from string, n int) ([]string, error) {
	if s.q.Dialect == schema.MySQL {
		var least, greatest sql.NullString
		if err := s.db.QueryRowContext(ctx, s.q.LaneTenants, l.Topic, l.N, from).Scan(&least, &greatest); err != nil || !least.Valid {
			return nil, err
		}
		out := []string{least.String}
		for t := least.String; t != greatest.String && len(out) < n; {
			if err := s.db.QueryRowContext(ctx, s.q.NextTenant, l.Topic, l.N, t).Scan(&t); err != nil {
				if errors.Is(err, sql.ErrNoRows) { // its rows went meanwhile
					break
				}
				return nil, err
			}
			out = append(out, t)
		}
		return out, nil
	}
	rs, err := s.db.QueryContext(ctx, s.q.LaneTenants, l.Topic, l.N, from, l.Topic, l.N, n)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var t string
		if err := rs.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rs.Err()
}

// fairRows reads a batch of l's due rows that p does not hold, shared
// between tenants (see shares), in id order.
func (s *sender) fairRows(ctx context.Context, l schema.Lane, p *progress, tenants []string) ([]row, error) {
	if len(tenants) == 0 {
		return nil, nil
	}
	// Each tenant's first rows, enough for a whole batch of it after
	// those p holds are taken out.
	k := s.cfg.BatchSize
	if p != nil {
		k += len(p.ids)
	}
	now := s.now().UnixNano()
	args := make([]any, 0, 5*len(tenants))
	for _, t := range tenants {
		args = append(args, l.Topic, l.N, t, now, k)
	}
	rs, err := s.db.QueryContext(ctx, s.q.FairIDs(len(tenants)), args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var found []candidate
	for rs.Next() {
		var c candidate
		if err := rs.Scan(&c.id, &c.tenant); err != nil {
			return nil, err
		}
		if p == nil || !p.has(c.id) {
			found = append(found, c)
		}
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	ids := shares(found, s.cfg.BatchSize)
	if len(ids) == 0 {
		return nil, nil
	}
	args = args[:0]
	for _, id := range ids {
		args = append(args, id)
	}
	return s.queryRows(ctx, s.q.RowsByID(len(ids)), args...)
}

// candidate is a row a batch may take: its id and its tenant.
type candidate struct {
	id     int64
	tenant string
}

// shares picks at most n of rows (each tenant's first rows not sent, in
// any order) for a batch: each tenant's first row, then each one's second,
// and so on, each round in id order, until n are picked. It returns their
// ids in id order. Each tenant's pick is its first rows: a prefix.
func shares(rows []candidate, n int) []int64 {
	slices.SortFunc(rows, func(a, b candidate) int { return cmp.Compare(a.id, b.id) })
	type ranked struct {
		id   int64
		rank int
	}
	seen := map[string]int{}
	all := make([]ranked, len(rows))
	for i, c := range rows {
		all[i] = ranked{id: c.id, rank: seen[c.tenant]}
		seen[c.tenant]++
	}
	slices.SortStableFunc(all, func(a, b ranked) int { return cmp.Compare(a.rank, b.rank) })
	all = all[:min(len(all), n)]
	ids := make([]int64, len(all))
	for i, r := range all {
		ids[i] = r.id
	}
	slices.Sort(ids)
	return ids
}
