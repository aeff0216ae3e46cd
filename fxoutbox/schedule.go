package fxoutbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
)

// Scheduled messages: rows of the Scheduled table, each with its due time,
// which the relay moves into the outbox when they are due. There they
// take their place in their topic after every row already in it, and go
// out as any row does: a scheduled message joins its topic's order at
// its due time, not at the time it was written.

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
// another replica scheduled it, sooner when this process did (its outbox
// sets a timer for the earliest schedule it knows of). A time in the past
// is due at once; a time after LatestSchedule is refused.
func Schedule(ctx context.Context, at time.Time, msg any) (string, error) {
	un := unitOf(ctx)
	if un == nil || un.u == nil {
		return "", ErrNoUnitOfWork
	}
	return un.u.schedule(ctx, un, at, msg)
}

// LatestSchedule is the latest time Schedule takes: a schedule's time is
// kept in nanoseconds since 1970 in an int64, which run out at
// 2262-04-11T23:47:16Z. A later time (or a ScheduleAfter that reaches
// past it) is refused: it would wrap round into the past and be
// delivered at once.
var LatestSchedule = time.Unix(0, math.MaxInt64).UTC()

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
// the transaction commits. A cancel at the moment the relay moves the
// schedule, as it falls due, waits for the move and answers false; on
// MySQL it does not wait: it locks the schedule's rows by their ids,
// skipping those the move holds, and answers false for them (a wait
// there deadlocked with the move, which rolled back the caller's whole
// transaction).
func Cancel(ctx context.Context, id string) (bool, error) {
	un := unitOf(ctx)
	if un == nil || un.u == nil {
		return false, ErrNoUnitOfWork
	}
	if un.q.CancelIDs == "" {
		res, err := un.tx.ExecContext(ctx, un.q.Cancel, id)
		if err != nil {
			return false, fmt.Errorf("fxoutbox: cancel %s: %w", id, err)
		}
		n, err := res.RowsAffected()
		return n > 0, err
	}
	rowIDs, err := scheduledRows(ctx, un.tx, un.q.CancelIDs, id)
	if err != nil {
		return false, fmt.Errorf("fxoutbox: cancel %s: %w", id, err)
	}
	cancelled := false
	for _, rowID := range rowIDs { // one row per route of the message, by id
		res, err := un.tx.ExecContext(ctx, un.q.Cancel, rowID)
		if err != nil {
			return false, fmt.Errorf("fxoutbox: cancel %s: %w", id, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return false, fmt.Errorf("fxoutbox: cancel %s: %w", id, err)
		}
		cancelled = cancelled || n > 0
	}
	return cancelled, nil
}

// scheduledRows returns the ids of the scheduled rows of message id that
// query reads (on MySQL, locking them), in order.
func scheduledRows(ctx context.Context, tx *sql.Tx, query, id string) ([]int64, error) {
	rs, err := tx.QueryContext(ctx, query, id)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []int64
	for rs.Next() {
		var rowID int64
		if err := rs.Scan(&rowID); err != nil {
			return nil, err
		}
		out = append(out, rowID)
	}
	slices.Sort(out)
	return out, rs.Err()
}

func (u *unitOfWork) schedule(ctx context.Context, un *unit, at time.Time, msg any) (string, error) {
	if msg == nil {
		return "", errors.New("fxoutbox.Schedule: nil message")
	}
	if at.After(LatestSchedule) {
		return "", fmt.Errorf("fxoutbox.Schedule: %s is after LatestSchedule (%s): a schedule's time is kept in nanoseconds since 1970, which run out then", at.UTC().Format(time.RFC3339), LatestSchedule.Format(time.RFC3339))
	}
	t := reflect.TypeOf(msg)
	d := u.local.registry().byName[u.bus.NameOf(t)]
	local := d != nil && d.typ == t
	var rows []fxbus.Outgoing
	// A deliver-by given as a duration counts from the due time, not from
	// now, and not from when the relay sends it.
	due := fxbus.WithDueTime(ctx, at)
	if !local || !d.command {
		var fails []fxbus.PublishFailure
		rows, fails = u.bus.Messages(due, []any{msg})
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
		u.bus.StampDeliverBy(due, m, msg)
		m.Metadata.Set(MetadataDepth, strconv.Itoa(depth))
		rows = append(rows, fxbus.Outgoing{Topic: u.local.topic, Message: m})
	}
	if len(rows) == 0 {
		return "", fmt.Errorf("fxoutbox.Schedule: nothing delivers %v: route it (fxbus.Route), or register it with fxoutbox.Durable or fxoutbox.Schedulable%s", t, pointerHint(t, u.local.registry().byName, u.bus))
	}
	id := rows[0].Message.UUID
	dueNs := int64(1) // a time before 1970 is as past as 1970, and its nanoseconds may not fit
	if at.After(time.Unix(0, 1)) {
		dueNs = at.UnixNano()
	}
	for _, r := range rows {
		meta, err := json.Marshal(r.Message.Metadata)
		if err != nil {
			return "", fmt.Errorf("fxoutbox.Schedule: metadata: %w", err)
		}
		if _, err := un.tx.ExecContext(ctx, un.q.Schedule, dueNs, r.Topic, u.laneOf(r.Topic, r.Message), id, []byte(r.Message.Payload), string(meta)); err != nil {
			return "", fmt.Errorf("fxoutbox.Schedule: %w", err)
		}
	}
	if un.due == 0 || dueNs < un.due {
		un.due = dueNs
	}
	return id, nil
}

// pointerHint says, when t is *T and T is what is registered (or the
// other way round), which one was: the type names differ by one star,
// easy to miss in the error above.
func pointerHint[D any](t reflect.Type, registered map[string]D, bus interface{ NameOf(reflect.Type) string }) string {
	other := reflect.PointerTo(t)
	if t.Kind() == reflect.Pointer {
		other = t.Elem()
	}
	if _, ok := registered[bus.NameOf(other)]; ok {
		return fmt.Sprintf("; %v is registered: schedule a %v, or register %v", other, other, t)
	}
	return ""
}
