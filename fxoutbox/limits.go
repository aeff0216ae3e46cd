package fxoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// SharedLimiter is an fxbus.Limiter whose budgets live in the database,
// one row per budget (a key's, a tenant's or a type's) in the rate limits
// table of migration 0008: every replica that gives it to its bus
// (fxbus.Config.Limiter) takes from one budget, so that a limit holds for
// the service, however many replicas it runs.
//
// Each take is a GCRA in one statement, an UPDATE of the budget's row
// guarded by its tolerance: a message that may go costs one round trip
// to the database; one over the limit costs a second, a SELECT of the
// budget for how long to wait. The first take of a budget in a process
// makes its row (an INSERT that leaves an existing row alone). The times
// are the services' clock's (the now the bus passes), never the
// database's, so that replicas agree with their clocks; keep them in sync
// within a small part of the limit's interval.
//
// Rows are kept: one per budget ever taken from. A limit per key over
// keys without end grows the table; delete rows whose tat_ns is in the
// past to trim it (a missing row is a budget at rest).
type SharedLimiter struct {
	db      *sql.DB
	take    string // the guarded update
	read    string // the budget's time, when the take was refused
	make    string // the budget's row, at rest
	made    sync.Map
	dialect Dialect
}

var _ fxbus.Limiter = (*SharedLimiter)(nil)

// NewSharedLimiter returns the SharedLimiter of db's rate limits table
// (t: defaults for the empty names), which Migrate made.
func NewSharedLimiter(db *sql.DB, d Dialect, t Tables) (*SharedLimiter, error) {
	if db == nil {
		return nil, errors.New("fxoutbox.NewSharedLimiter: nil *sql.DB")
	}
	if !schema.Known(d) {
		return nil, fmt.Errorf("fxoutbox.NewSharedLimiter: unknown %v", d)
	}
	t = schema.WithDefaults(t)
	if err := schema.Validate(t); err != nil {
		return nil, fmt.Errorf("fxoutbox.NewSharedLimiter: %w", err)
	}
	table := schema.Quote(d, schema.RateLimits(t))
	greatest := "GREATEST"
	insert := "INSERT INTO %s (name, tat_ns) VALUES (?, 0) ON CONFLICT (name) DO NOTHING"
	switch d {
	case SQLite:
		greatest = "MAX" // SQLite's scalar max of its arguments
	case MySQL:
		insert = "INSERT IGNORE INTO %s (name, tat_ns) VALUES (?, 0)"
	}
	return &SharedLimiter{
		db: db, dialect: d,
		// The row goes on one interval from the later of its time and now,
		// when that is within the tolerance of now: the GCRA's test and
		// its step in one statement, atomic under the row's lock.
		take: d.Rebind(fmt.Sprintf("UPDATE %s SET tat_ns = %s(tat_ns, ?) + ? WHERE name = ? AND %s(tat_ns, ?) - ? <= ?", table, greatest, greatest)),
		read: d.Rebind(fmt.Sprintf("SELECT tat_ns FROM %s WHERE name = ?", table)),
		make: d.Rebind(fmt.Sprintf(insert, table)),
	}, nil
}

// Take is fxbus.Limiter's: one round trip when the message may go, two
// when it must wait.
func (l *SharedLimiter) Take(ctx context.Context, name string, lim fxbus.Limit, now time.Time) (time.Duration, error) {
	if _, ok := l.made.Load(name); !ok {
		if _, err := l.db.ExecContext(ctx, l.make, name); err != nil {
			return 0, fmt.Errorf("fxoutbox.SharedLimiter: make the budget: %w", err)
		}
		l.made.Store(name, struct{}{})
	}
	n, step, tol := now.UnixNano(), int64(lim.Interval()), int64(lim.Tolerance())
	res, err := l.db.ExecContext(ctx, l.take, n, step, name, n, n, tol)
	if err != nil {
		return 0, fmt.Errorf("fxoutbox.SharedLimiter: take: %w", err)
	}
	if took, err := res.RowsAffected(); err != nil {
		return 0, fmt.Errorf("fxoutbox.SharedLimiter: take: %w", err)
	} else if took == 1 {
		return 0, nil
	}
	var tat int64
	switch err := l.db.QueryRowContext(ctx, l.read, name).Scan(&tat); {
	case errors.Is(err, sql.ErrNoRows): // deleted meanwhile: at rest, ask again after an interval, not at once
		l.made.Delete(name)
		return lim.Interval(), nil
	case err != nil:
		return 0, fmt.Errorf("fxoutbox.SharedLimiter: read the budget: %w", err)
	}
	// Another replica may have taken since the update: a wait of at
	// least a nanosecond, and the next take decides.
	return max(time.Duration(tat-n-tol), time.Nanosecond), nil
}
