package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// The schedules: the relay's timer for those it knows of, and their
// move into the outbox when they are due.

// ScheduledAt tells the relay that a commit scheduled a row due at dueNs (by
// the outbox's clock): it wakes then, or at once if that is earlier than
// what it waits for.
func (r *Relay) ScheduledAt(dueNs int64) {
	for {
		cur := r.nextAt.Load()
		if cur != 0 && cur <= dueNs {
			return
		}
		if r.nextAt.CompareAndSwap(cur, dueNs) {
			r.notify()
			return
		}
	}
}

// earliestDue is when the earliest schedule is due as far as this relay
// knows, in ns by the outbox's clock (0: none): the earliest this process
// wrote, and what the Scheduled table said at most a poll interval ago
// (an index lookup, not one per pass: a busy relay passes far more often).
func (r *Relay) earliestDue(ctx context.Context) int64 {
	now := r.now()
	if r.schedCheckedAt.IsZero() || now.Sub(r.schedCheckedAt) >= r.cfg.PollInterval || now.Before(r.schedCheckedAt) {
		if due, err := r.nextDue(ctx); err == nil {
			r.schedNext, r.schedCheckedAt = due, now
		}
	}
	due := r.schedNext
	if known := r.nextAt.Load(); known != 0 && (due == 0 || known < due) {
		due = known
	}
	return due
}

// idle is how long a relay that drained everything waits before its next
// pass: the poll interval, or less when a schedule falls due sooner.
func (r *Relay) idle(ctx context.Context) time.Duration {
	wait := r.cfg.PollInterval
	due := r.earliestDue(ctx)
	if due == 0 {
		return wait
	}
	return max(0, min(wait, time.Duration(due-r.now().UnixNano())))
}

// promoteDue moves the due schedules, if any is due as far as the relay
// knows.
func (r *Relay) promoteDue(ctx context.Context) error {
	due := r.earliestDue(ctx)
	if due == 0 || due > r.now().UnixNano() {
		return nil
	}
	r.nextAt.CompareAndSwap(due, 0) // what it waited for is due: the table says what is next
	moved, err := r.promote(ctx)
	r.schedCheckedAt = time.Time{} // look again: more may wait
	if moved > 0 {
		r.discoveredAt = time.Time{} // the moved rows' topics: from the table
	}
	return err
}

// scheduleLease is the leases table's name for the right to move due
// schedules into the outbox, which one relay holds at a time.
const scheduleLease = "fxcqrs:scheduled"

// promote moves the scheduled rows due by the outbox's clock into the
// outbox, in due order, a batch per transaction, while this relay holds
// the schedule lease; it returns how many it moved. Each batch's DELETE
// must delete every row its INSERT copied, or the batch rolls back: a
// relay that lost the lease in between cannot move a row twice.
func (r *Relay) promote(ctx context.Context) (int, error) {
	moved := 0
	for {
		ok, err := r.lease(ctx, scheduleLease)
		if err != nil || !ok {
			return moved, err
		}
		ids, err := r.dueIDs(ctx)
		if err != nil || len(ids) == 0 {
			return moved, err
		}
		if err := r.move(ctx, ids); err != nil {
			return moved, err
		}
		moved += len(ids)
		if len(ids) < r.cfg.BatchSize {
			return moved, nil
		}
	}
}

func (r *Relay) dueIDs(ctx context.Context) ([]any, error) {
	rs, err := r.db.QueryContext(ctx, r.q.DueIDs, r.now().UnixNano(), r.cfg.BatchSize)
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

func (r *Relay) move(ctx context.Context, ids []any) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, schema.In(r.q.Dialect, r.q.PromoteIn, len(ids)), ids...); err != nil {
		return errors.Join(err, schema.Rollback(tx))
	}
	res, err := tx.ExecContext(ctx, schema.In(r.q.Dialect, r.q.UnscheduleIn, len(ids)), ids...)
	if err != nil {
		return errors.Join(err, schema.Rollback(tx))
	}
	if n, err := res.RowsAffected(); err != nil || int(n) != len(ids) {
		return errors.Join(err, schema.Rollback(tx), fmt.Errorf("moved %d of %d due schedules: another relay took them", n, len(ids)))
	}
	return tx.Commit()
}

// nextDue returns when the earliest scheduled row is due, in ns by the
// outbox's clock, or 0 when none waits: an index lookup.
func (r *Relay) nextDue(ctx context.Context) (int64, error) {
	var due sql.NullInt64
	if err := r.db.QueryRowContext(ctx, r.q.NextDue).Scan(&due); err != nil {
		return 0, err
	}
	return due.Int64, nil
}
