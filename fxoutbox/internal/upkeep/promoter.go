package upkeep

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// ScheduleLease is the leases table's name for the right to move due
// schedules into the outbox, which one process holds at a time.
const ScheduleLease = "fxcqrs:scheduled"

// PromoterConfig configures the schedule promoter; the outbox gives it
// the relay's numbers (fxoutbox.RelayConfig).
type PromoterConfig struct {
	// PollInterval bounds how long it waits before it looks at the
	// Scheduled table again, for what other processes scheduled.
	PollInterval time.Duration
	// BatchSize is how many schedules one transaction moves.
	BatchSize int
	// RetryInitial is the first wait after a failed round; it doubles up
	// to RetryMax.
	RetryInitial, RetryMax time.Duration
}

// Sender is told when due schedules were moved into the outbox, so that
// it sends their rows now and finds their topics in the table (the
// relay).
type Sender interface {
	Discover()
}

// PromoterParams is everything a schedule promoter is made of.
type PromoterParams struct {
	DB      *sql.DB
	Queries schema.Queries
	// Leases holds the schedule lease: a Holder of its own, for the
	// promoter's goroutine, with the relay's owner, so that the relay's
	// release at stop gives the lease back too.
	Leases *lease.Holder
	Config PromoterConfig
	Sender Sender
	// Acquire takes a place in the connection budget for each round (its
	// statements and its transactions, one at a time); nil: no budget.
	Acquire Acquire
	Log     *zap.Logger
	Now     func() time.Time
	After   func(time.Duration) <-chan time.Time
}

// SchedulePromoter moves the scheduled rows that are due, by the
// outbox's clock, into the outbox, where they take their place in their
// topic after every row already in it. It waits for the earliest
// schedule it knows of: those this process wrote (ScheduledAt) and what
// the Scheduled table said at most a poll interval ago.
type SchedulePromoter struct {
	service
	db      *sql.DB
	q       schema.Queries
	leases  *lease.Holder
	cfg     PromoterConfig
	sender  Sender
	acquire Acquire
	log     *zap.Logger
	now     func() time.Time
	after   func(time.Duration) <-chan time.Time

	wake   chan struct{}
	nextAt atomic.Int64 // the earliest schedule this process wrote and has not seen due, ns; 0: none

	checkedNext int64     // the Scheduled table's earliest due time when last asked (the loop's alone)
	checkedAt   time.Time // by now; zero: ask

	rounds atomic.Uint64 // for tests: how many rounds ran
}

// NewSchedulePromoter returns the promoter p describes, not started.
func NewSchedulePromoter(p PromoterParams) *SchedulePromoter {
	return &SchedulePromoter{
		service: newService("schedule promoter"),
		db:      p.DB, q: p.Queries, cfg: p.Config, sender: p.Sender, acquire: p.Acquire, log: p.Log, now: p.Now, after: p.After,
		leases: p.Leases,
		wake:   make(chan struct{}, 1),
	}
}

// ScheduledAt tells the promoter that a commit scheduled a row due at
// dueNs (by the outbox's clock): it wakes then, or at once if that is
// earlier than what it waits for.
func (p *SchedulePromoter) ScheduledAt(dueNs int64) {
	for {
		cur := p.nextAt.Load()
		if cur != 0 && cur <= dueNs {
			return
		}
		if p.nextAt.CompareAndSwap(cur, dueNs) {
			select {
			case p.wake <- struct{}{}:
			default:
			}
			return
		}
	}
}

// Rounds returns how many rounds the promoter has run, for tests.
func (p *SchedulePromoter) Rounds() uint64 { return p.rounds.Load() }

// Start runs the promoter until Close.
func (p *SchedulePromoter) Start() { p.start(p.loop) }

// Close stops the promoter after the batch in hand, within ctx.
func (p *SchedulePromoter) Close(ctx context.Context) error { return p.close(ctx) }

func (p *SchedulePromoter) loop() {
	backoff := p.cfg.RetryInitial
	for {
		ctx := context.Background()
		var wait time.Duration
		err := safely(p.log, "the schedules' move", func() error {
			// One place of the connection budget for the round's
			// statements, which run one at a time.
			release, err := p.take(p.acquire)
			if err != nil {
				return err
			}
			defer release()
			if err := p.promoteDue(ctx); err != nil {
				return err
			}
			wait = p.idle(ctx)
			return nil
		})
		if p.stopping() {
			return // the stop may have ended its wait for a place: nothing failed
		}
		p.rounds.Add(1)
		wake := p.wake
		if err != nil {
			logFailure(p.log, p.db, "due schedules wait", err, backoff)
			wait, wake = backoff, nil // a commit is no reason to hurry
			backoff = min(2*backoff, p.cfg.RetryMax)
		} else {
			backoff = p.cfg.RetryInitial
		}
		select {
		case <-p.stop:
			return
		case <-wake:
		case <-p.after(wait):
		}
	}
}

// earliestDue is when the earliest schedule is due as far as the
// promoter knows, in ns by the outbox's clock (0: none): the earliest
// this process wrote, and what the Scheduled table said at most a poll
// interval ago (an index lookup, not one per wake: a busy service
// schedules far more often).
func (p *SchedulePromoter) earliestDue(ctx context.Context) int64 {
	now := p.now()
	if p.checkedAt.IsZero() || now.Sub(p.checkedAt) >= p.cfg.PollInterval || now.Before(p.checkedAt) {
		if due, err := p.nextDue(ctx); err == nil {
			p.checkedNext, p.checkedAt = due, now
		}
	}
	due := p.checkedNext
	if known := p.nextAt.Load(); known != 0 && (due == 0 || known < due) {
		due = known
	}
	return due
}

// idle is how long the promoter waits before its next round: the poll
// interval, or less when a schedule falls due sooner.
func (p *SchedulePromoter) idle(ctx context.Context) time.Duration {
	wait := p.cfg.PollInterval
	due := p.earliestDue(ctx)
	if due == 0 {
		return wait
	}
	return max(0, min(wait, time.Duration(due-p.now().UnixNano())))
}

// promoteDue moves the due schedules, if any is due as far as the
// promoter knows, and tells the sender when it moved some.
func (p *SchedulePromoter) promoteDue(ctx context.Context) error {
	due := p.earliestDue(ctx)
	if due == 0 || due > p.now().UnixNano() {
		return nil
	}
	p.nextAt.CompareAndSwap(due, 0) // what it waited for is due: the table says what is next
	moved, err := p.promote(ctx)
	p.checkedAt = time.Time{} // look again: more may wait
	if moved > 0 {
		p.sender.Discover() // the moved rows' topics: from the table
	}
	return err
}

// promote moves the scheduled rows due by the outbox's clock into the
// outbox, in due order, a batch per transaction, while this process holds
// the schedule lease; it returns how many it moved. Each batch's DELETE
// must delete every row its INSERT copied, or the batch rolls back: a
// process that lost the lease in between cannot move a row twice.
func (p *SchedulePromoter) promote(ctx context.Context) (int, error) {
	moved := 0
	for {
		ok, err := p.leases.Take(ctx, ScheduleLease)
		if err != nil || !ok {
			return moved, err
		}
		ids, err := p.dueIDs(ctx)
		if err != nil || len(ids) == 0 {
			return moved, err
		}
		n, err := p.move(ctx, ids)
		moved += n
		if err != nil {
			return moved, err
		}
		if len(ids) < p.cfg.BatchSize {
			return moved, nil
		}
	}
}

func (p *SchedulePromoter) dueIDs(ctx context.Context) ([]any, error) {
	rs, err := p.db.QueryContext(ctx, p.q.DueIDs, p.now().UnixNano(), p.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var ids []any
	for rs.Next() {
		var id int64
		if err := rs.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rs.Err()
}

// move moves the scheduled rows ids into the outbox in one transaction
// and returns how many it moved: fewer than ids when a Cancel took some
// first.
func (p *SchedulePromoter) move(ctx context.Context, ids []any) (int, error) {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	if p.q.LockIn != "" {
		// Locked for writing first, by id: the INSERT … SELECT below would
		// take shared locks and the DELETE upgrade them, and a Cancel
		// waiting in between deadlocked with it on MariaDB. A schedule
		// that a Cancel deleted since it was read is not among the rows
		// locked: the others move without it.
		if ids, err = p.lock(ctx, tx, ids); err != nil || len(ids) == 0 {
			return 0, errors.Join(err, schema.Rollback(tx))
		}
	}
	if _, err := tx.ExecContext(ctx, schema.In(p.q.Dialect, p.q.PromoteIn, len(ids)), ids...); err != nil {
		return 0, errors.Join(err, schema.Rollback(tx))
	}
	res, err := tx.ExecContext(ctx, schema.In(p.q.Dialect, p.q.UnscheduleIn, len(ids)), ids...)
	if err != nil {
		return 0, errors.Join(err, schema.Rollback(tx))
	}
	if n, err := res.RowsAffected(); err != nil || int(n) != len(ids) {
		return 0, errors.Join(err, schema.Rollback(tx), fmt.Errorf("moved %d of %d due schedules: another relay took them", n, len(ids)))
	}
	return len(ids), tx.Commit()
}

// lock locks the scheduled rows ids for writing in tx and returns the ids
// of those still there.
func (p *SchedulePromoter) lock(ctx context.Context, tx *sql.Tx, ids []any) ([]any, error) {
	rs, err := tx.QueryContext(ctx, schema.In(p.q.Dialect, p.q.LockIn, len(ids)), ids...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var locked []any
	for rs.Next() {
		var id int64
		if err := rs.Scan(&id); err != nil {
			return nil, err
		}
		locked = append(locked, id)
	}
	return locked, rs.Err()
}

// nextDue returns when the earliest scheduled row is due, in ns by the
// outbox's clock, or 0 when none waits: an index lookup.
func (p *SchedulePromoter) nextDue(ctx context.Context) (int64, error) {
	var due sql.NullInt64
	if err := p.db.QueryRowContext(ctx, p.q.NextDue).Scan(&due); err != nil {
		return 0, err
	}
	return due.Int64, nil
}
