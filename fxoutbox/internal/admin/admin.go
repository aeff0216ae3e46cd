// Package admin reads and repairs what the outbox's tables hold: the
// backlog, the lag, the leases, the scheduled messages, the dead letters
// (the outbox's and the inbound ones: listed, replayed, discarded), the
// parked keys of ordered subscriptions, and the record of every repair.
// It needs only the database; fxoutbox.Admin hands it on, and the console
// and the command line use it.
package admin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// Admin reads and repairs what the outbox's tables hold: the read API
// (Backlog, Lag, DeadLetters, Scheduled, Leases), and the dead letters,
// listed, replayed and discarded. It needs only the database: no bus, no
// relay, no running service (the command line, cmd/fxcqrs, uses it), and
// it is safe to use while replicas run: a replay is one transaction,
// which the relays see as new rows.
type Admin struct {
	db  *sql.DB
	d   schema.Dialect
	t   schema.Tables
	q   schema.Queries
	now func() time.Time

	lanes func(topic string) int // see WithLanes; nil: lane 0
}

// New returns the Admin of db's outbox tables (t: defaults for the
// empty names), on the clock now (nil: time.Now), which must be the
// services' for the lags and ages it reports to mean anything.
func New(db *sql.DB, d schema.Dialect, t schema.Tables, now func() time.Time) (*Admin, error) {
	if db == nil {
		return nil, errors.New("fxoutbox.NewAdmin: nil *sql.DB")
	}
	if !schema.Known(d) {
		return nil, fmt.Errorf("fxoutbox.NewAdmin: unknown dialect %v", d)
	}
	t = schema.WithDefaults(t)
	if err := schema.Validate(t); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Admin{db: db, d: d, t: t, q: schema.NewQueries(d, t), now: now}, nil
}

// repair runs one action on ids in one transaction, and records it with
// who asked and why: both are required.
func (a *Admin) repair(ctx context.Context, action string, ids []int64, who, why string, do func(tx *sql.Tx, id, now int64) (bool, error)) (int, error) {
	if strings.TrimSpace(who) == "" {
		return 0, fmt.Errorf("fxoutbox: %s: say who asks: every repair is recorded", action)
	}
	if strings.TrimSpace(why) == "" {
		return 0, fmt.Errorf("fxoutbox: %s: say why: every repair is recorded with its reason", action)
	}
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("fxoutbox: %s: %w", action, err)
	}
	if err := a.writeFirst(ctx, tx); err != nil {
		return 0, errors.Join(fmt.Errorf("fxoutbox: %s: %w", action, err), schema.Rollback(tx))
	}
	now := a.now().UnixNano()
	var done []string
	for _, id := range ids {
		ok, err := do(tx, id, now)
		if err != nil {
			return 0, errors.Join(fmt.Errorf("fxoutbox: %s %d: %w", action, id, err), schema.Rollback(tx))
		}
		if ok {
			done = append(done, fmt.Sprint(id))
		}
	}
	if len(done) > 0 {
		if _, err := tx.ExecContext(ctx, a.d.Rebind("INSERT INTO "+schema.Quote(a.d, a.t.Repairs)+" (at_ns, action, target, who, why) VALUES (?, ?, ?, ?, ?)"),
			now, action, "dead letters "+strings.Join(done, ","), who, why); err != nil {
			return 0, errors.Join(fmt.Errorf("fxoutbox: %s: record: %w", action, err), schema.Rollback(tx))
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("fxoutbox: %s: commit: %w", action, err)
	}
	return len(done), nil
}

// Repair is one recorded repairing action.
type Repair struct {
	At       time.Time
	Action   string // "replay", "discard"
	Target   string // what it acted on: "dead letters 4,7"
	Who, Why string
}

// Repairs returns the last limit repairing actions (default 100), newest
// first.
func (a *Admin) Repairs(ctx context.Context, limit int) ([]Repair, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT at_ns, action, target, who, why FROM "+schema.Quote(a.d, a.t.Repairs)+" ORDER BY id DESC LIMIT ?"), limit)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: repairs: %w", err)
	}
	defer rows.Close()
	var out []Repair
	for rows.Next() {
		var r Repair
		var at int64
		if err := rows.Scan(&at, &r.Action, &r.Target, &r.Who, &r.Why); err != nil {
			return nil, fmt.Errorf("fxoutbox: repairs: %w", err)
		}
		r.At = time.Unix(0, at)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Lease is which relay owns what, until when. Topic is the lease's name:
// a topic (its lane 0), a topic's other lane ("orders#3"), the right to
// move due schedules ("fxcqrs:scheduled"), or a relay's own member lease
// ("fxcqrs:relay:" and its owner id), by which the relays count each other
// to share a topic's lanes.
type Lease struct {
	Topic, Owner string
	Until        time.Time
}

// Leases returns the relays' leases, by topic.
func (a *Admin) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := a.db.QueryContext(ctx, "SELECT topic, owner, until_ns FROM "+schema.Quote(a.d, a.t.Leases)+" ORDER BY topic")
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: leases: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var l Lease
		var until int64
		if err := rows.Scan(&l.Topic, &l.Owner, &until); err != nil {
			return nil, fmt.Errorf("fxoutbox: leases: %w", err)
		}
		l.Until = time.Unix(0, until)
		out = append(out, l)
	}
	return out, rows.Err()
}

// writeFirst begins tx with a write that changes nothing, on SQLite: a
// transaction that reads first and writes after fails with SQLITE_BUSY
// when another connection wrote in between, while one that writes first
// waits for the lock (busy_timeout). Elsewhere it does nothing.
func (a *Admin) writeFirst(ctx context.Context, tx *sql.Tx) error {
	if a.d != schema.SQLite {
		return nil
	}
	_, err := tx.ExecContext(ctx, "UPDATE "+schema.Quote(a.d, a.t.Repairs)+" SET why = why WHERE id = -1")
	return err
}
