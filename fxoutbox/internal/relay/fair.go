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

// laneShares is what the relay knows of a lane's tenants: the list it
// shares a batch between, read again at least once per batchesPerTurn
// full batches of the lane (a pass sends at most that many of it in a
// row) and, while the list has several tenants, after a batch that was
// not full, so that a tenant new in the lane has its share within one
// pass (a lane of one tenant needs no list after a batch that was not
// full: that batch held every due row, see batchOfOne); and where the
// next list starts when the lane had more than maxTenants tenants.
type laneShares struct {
	tenants []string
	last    map[string]int64 // each tenant's highest id read while published rows of l wait
	from    string           // "" but when the tenants go on beyond the list
	age     int              // batches read by the list since it was read; 0: read it
}

// batch reads l's next batch: in id order when one tenant has rows in l
// (as before the shares), else each tenant's share (fairRows). p is l's
// published rows not yet deleted, or nil.
//
// A lane whose list has one tenant (or none yet) is read in id order
// first, without its list: a batch that is not full holds every due row
// of l not yet sent, so whatever tenants they are of, each has all it
// has, which is what sharing would give. Only a full batch asks whether
// more than one tenant waits (at most once per batchesPerTurn batches):
// the common pass, a few rows of one tenant, is one statement, not two.
func (s *sender) batch(ctx context.Context, l schema.Lane, p *progress) ([]row, error) {
	if s.sharing == nil {
		s.sharing = map[schema.Lane]*laneShares{}
	}
	ls := s.sharing[l]
	if ls == nil {
		ls = &laneShares{}
		s.sharing[l] = ls
	}
	if len(ls.tenants) <= 1 && ls.from == "" {
		return s.batchOfOne(ctx, l, p, ls)
	}
	fresh := ls.age == 0 || ls.from != ""
	if fresh {
		if err := s.readTenants(ctx, l, ls); err != nil {
			return nil, err
		}
	}
	rows, err := s.share(ctx, l, p, ls)
	ls.age = (ls.age + 1) % batchesPerTurn
	if err != nil || len(rows) >= s.cfg.BatchSize {
		return rows, err
	}
	ls.age = 0 // l drained: its next batch (in the next pass) reads the list again
	if fresh {
		return rows, nil
	}
	// Not full, by a list read batches ago: a tenant new since may wait.
	if err := s.readTenants(ctx, l, ls); err != nil {
		return nil, err
	}
	return s.share(ctx, l, p, ls)
}

// batchOfOne reads l's next batch in id order, ls having one tenant or
// none: a full one, when ls's list was not read within batchesPerTurn
// batches, is read again shared if the list read then has more tenants.
func (s *sender) batchOfOne(ctx context.Context, l schema.Lane, p *progress, ls *laneShares) ([]row, error) {
	rows, err := s.inOrder(ctx, l, p)
	if err != nil || len(rows) < s.cfg.BatchSize {
		ls.age = 0 // l drained: its next full batch reads the list
		return rows, err
	}
	if ls.age != 0 { // the list was read within batchesPerTurn batches
		ls.age = (ls.age + 1) % batchesPerTurn
		return rows, nil
	}
	if err := s.readTenants(ctx, l, ls); err != nil {
		return nil, err
	}
	ls.age = 1 % batchesPerTurn
	if len(ls.tenants) <= 1 && ls.from == "" {
		return rows, nil
	}
	return s.fairRows(ctx, l, p, ls) // tenants wait behind this one's backlog: share
}

// inOrder reads l's batch in id order: beside p's rows, when it has.
func (s *sender) inOrder(ctx context.Context, l schema.Lane, p *progress) ([]row, error) {
	if p != nil {
		return s.rowsBeside(ctx, l, p)
	}
	return s.rows(ctx, l)
}

// readTenants reads ls's list of l's tenants.
func (s *sender) readTenants(ctx context.Context, l schema.Lane, ls *laneShares) error {
	most := min(maxTenants, s.cfg.BatchSize)
	tenants, err := s.laneTenants(ctx, l, ls.from, most+1)
	if err != nil {
		return err
	}
	ls.from = ""
	if len(tenants) > most { // the first left out starts the next list
		ls.from, tenants = tenants[most], tenants[:most]
	}
	ls.tenants = tenants
	return nil
}

// share reads l's batch by ls: in id order for one tenant, else shared.
func (s *sender) share(ctx context.Context, l schema.Lane, p *progress, ls *laneShares) ([]row, error) {
	if len(ls.tenants) <= 1 && ls.from == "" {
		return s.inOrder(ctx, l, p)
	}
	return s.fairRows(ctx, l, p, ls)
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
// between tenants (see shares), in id order. The rows come whole after
// the last of each tenant's that ls read while p held rows, else as ids
// only, as in rowsBeside: in the rare batch that takes one of those (a
// late commit, or a row whose publish failed), a second statement reads
// the batch whole.
func (s *sender) fairRows(ctx context.Context, l schema.Lane, p *progress, ls *laneShares) ([]row, error) {
	if len(ls.tenants) == 0 {
		return nil, nil
	}
	// Each tenant's first rows, enough for a whole batch of it after
	// those p holds are taken out.
	k := s.cfg.BatchSize
	if p == nil {
		clear(ls.last) // nothing published is waiting: every row comes whole
	} else {
		k += len(p.ids)
	}
	now := s.now().UnixNano()
	args := make([]any, 0, 8*len(ls.tenants))
	for _, t := range ls.tenants {
		if s.q.FairWhole {
			last := ls.last[t]
			args = append(args, last, last, last)
		}
		args = append(args, l.Topic, l.N, t, now, k)
	}
	rs, err := s.db.QueryContext(ctx, s.q.FairRows(len(ls.tenants)), args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var found []candidate
	for rs.Next() {
		var c candidate
		if err := rs.Scan(&c.id, &c.tenant, &c.msgID, &c.payload, &c.metadata, &c.attempts); err != nil {
			return nil, err
		}
		if p == nil || !p.has(c.id) {
			c.whole = s.q.FairWhole && c.id > ls.last[c.tenant]
			found = append(found, c)
		}
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	picked := shares(found, s.cfg.BatchSize)
	if ls.last == nil {
		ls.last = map[string]int64{}
	}
	out := make([]row, len(picked))
	whole := true
	for i, c := range picked {
		out[i] = c.row
		whole = whole && c.whole
		ls.last[c.tenant] = max(ls.last[c.tenant], c.id)
	}
	if whole || len(out) == 0 {
		return out, nil
	}
	args = args[:0]
	for _, rw := range out {
		args = append(args, rw.id)
	}
	return s.queryRows(ctx, s.q.RowsByID(len(out)), args...)
}

// candidate is a row a batch may take, with its tenant; whole unless
// only its id was read.
type candidate struct {
	row
	tenant string
	whole  bool
}

// shares picks at most n of rows (each tenant's first rows not sent, in
// any order) for a batch: each tenant's first row, then each one's second,
// and so on, each round in id order, until n are picked. It returns them
// in id order. Each tenant's pick is its first rows: a prefix.
func shares(rows []candidate, n int) []candidate {
	slices.SortFunc(rows, func(a, b candidate) int { return cmp.Compare(a.id, b.id) })
	rank := make(map[int64]int, len(rows))
	seen := map[string]int{}
	for _, c := range rows {
		rank[c.id] = seen[c.tenant]
		seen[c.tenant]++
	}
	picked := slices.Clone(rows)
	slices.SortStableFunc(picked, func(a, b candidate) int { return cmp.Compare(rank[a.id], rank[b.id]) })
	picked = picked[:min(len(picked), n)]
	slices.SortFunc(picked, func(a, b candidate) int { return cmp.Compare(a.id, b.id) })
	return picked
}
