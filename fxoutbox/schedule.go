package fxoutbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// Scheduled messages: rows of the Scheduled table, each with its due time,
// which the relay moves into the outbox when they are due. There they
// take their place in their topic after every row already in it, and go
// out as any row does: a scheduled message joins its topic's order at
// its due time, not at the time it was written.

// ErrNoUnitOfWork is returned by Schedule and Cancel called outside a
// unit of work: a schedule is written in the handler's transaction, so
// that it exists if and only if the handler's writes commit.
var ErrNoUnitOfWork = errors.New("fxoutbox: no unit of work in the context: schedule from a handler the outbox's unit of work wraps")

// Schedule writes msg, in the unit of work of ctx, to be delivered at at
// by the outbox's clock, and returns its message id, by which Cancel
// finds it. msg is
//   - a command registered as a ScheduledCommand: Exec runs it on a
//     replica of this service;
//   - an event with a route: it is published to each of its routes' topics
//     (with the one id), and/or, if it is a DurableEvent, its in-process
//     handlers run.
//
// Anything else is refused: nothing would deliver it. A message is never
// delivered before at; it is delivered at least once after it (with the
// inbox, its effects once): within the relay's poll interval of at when
// another replica scheduled it, sooner when this process did (its relay
// sets a timer for the earliest schedule it knows of). A time in the past
// is due at once.
func Schedule(ctx context.Context, at time.Time, msg any) (string, error) {
	un := unitOf(ctx)
	if un == nil || un.u == nil {
		return "", ErrNoUnitOfWork
	}
	return un.u.schedule(ctx, un, at, msg)
}

// ScheduleAfter is Schedule at the outbox's clock's now plus d.
func ScheduleAfter(ctx context.Context, d time.Duration, msg any) (string, error) {
	un := unitOf(ctx)
	if un == nil || un.u == nil {
		return "", ErrNoUnitOfWork
	}
	return un.u.schedule(ctx, un, un.u.now().Add(d), msg)
}

// Cancel deletes the scheduled message id, in the unit of work of ctx,
// and reports whether it was still waiting: false when it was due and is
// already on its way (or never existed). The cancellation takes effect if
// the transaction commits.
func Cancel(ctx context.Context, id string) (bool, error) {
	un := unitOf(ctx)
	if un == nil || un.u == nil {
		return false, ErrNoUnitOfWork
	}
	res, err := un.tx.ExecContext(ctx, un.u.q.Cancel, id)
	if err != nil {
		return false, fmt.Errorf("fxoutbox: cancel %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (u *unitOfWork) schedule(ctx context.Context, un *unit, at time.Time, msg any) (string, error) {
	if msg == nil {
		return "", errors.New("fxoutbox.Schedule: nil message")
	}
	t := typeOf(msg)
	d := u.reg.Load().byName[u.bus.NameOf(t)]
	local := d != nil && d.typ == t
	var rows []fxbus.Outgoing
	if !local || !d.command {
		var fails []fxbus.PublishFailure
		rows, fails = u.bus.Messages(ctx, []any{msg})
		if len(fails) > 0 {
			return "", &fxbus.PublishError{Failures: fails}
		}
	}
	if local {
		depth, err := followUpDepth(ctx, msg)
		if err != nil {
			return "", err
		}
		m, err := u.bus.Encode(ctx, msg)
		if err != nil {
			return "", fmt.Errorf("fxoutbox.Schedule: encode %T: %w", msg, err)
		}
		m.Metadata.Set(MetadataDepth, strconv.Itoa(depth))
		rows = append(rows, fxbus.Outgoing{Topic: u.delivery.Topic, Message: m})
	}
	if len(rows) == 0 {
		return "", fmt.Errorf("fxoutbox.Schedule: nothing delivers %v: route it (fxbus.Route), or register it with fxoutbox.Durable or fxoutbox.Schedulable", t)
	}
	id := rows[0].Message.UUID
	due := at.UnixNano()
	for _, r := range rows {
		meta, err := json.Marshal(r.Message.Metadata)
		if err != nil {
			return "", fmt.Errorf("fxoutbox.Schedule: metadata: %w", err)
		}
		if _, err := un.tx.ExecContext(ctx, u.q.Schedule, due, r.Topic, u.laneOf(r.Topic, r.Message), id, []byte(r.Message.Payload), string(meta)); err != nil {
			return "", fmt.Errorf("fxoutbox.Schedule: %w", err)
		}
	}
	if un.due == 0 || due < un.due {
		un.due = due
	}
	return id, nil
}

// scheduleLease is the leases table's name for the right to move due
// schedules into the outbox, which one relay holds at a time.
const scheduleLease = "fxcqrs:scheduled"

// promote moves the scheduled rows due by the outbox's clock into the
// outbox, in due order, a batch per transaction, while this relay holds
// the schedule lease; it returns how many it moved. Each batch's DELETE
// must delete every row its INSERT copied, or the batch rolls back: a
// relay that lost the lease in between cannot move a row twice.
func (r *relay) promote(ctx context.Context) (int, error) {
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

func (r *relay) dueIDs(ctx context.Context) ([]any, error) {
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

func (r *relay) move(ctx context.Context, ids []any) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, schema.In(r.q.Dialect, r.q.PromoteIn, len(ids)), ids...); err != nil {
		return errors.Join(err, rollback(tx))
	}
	res, err := tx.ExecContext(ctx, schema.In(r.q.Dialect, r.q.UnscheduleIn, len(ids)), ids...)
	if err != nil {
		return errors.Join(err, rollback(tx))
	}
	if n, err := res.RowsAffected(); err != nil || int(n) != len(ids) {
		return errors.Join(err, rollback(tx), fmt.Errorf("moved %d of %d due schedules: another relay took them", n, len(ids)))
	}
	return tx.Commit()
}

// nextDue returns when the earliest scheduled row is due, in ns by the
// outbox's clock, or 0 when none waits: an index lookup.
func (r *relay) nextDue(ctx context.Context) (int64, error) {
	var due sql.NullInt64
	if err := r.db.QueryRowContext(ctx, r.q.NextDue).Scan(&due); err != nil {
		return 0, err
	}
	return due.Int64, nil
}
