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
	"slices"
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

	// tenant, when set, is the one tenant whose rows a reads and repairs
	// (see ForTenant); nil: every tenant's.
	tenant *string
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
// who asked and why: both are required. Each letter's tenant (its row's
// msg_tenant) is read first: an Admin for one tenant skips the letters of
// the others, and the action is recorded once per tenant it touched, with
// that tenant.
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
	done := map[string][]string{} // by tenant
	var tenants []string          // in the order first touched
	n := 0
	for _, id := range ids {
		tenant, found, err := a.tenantOfLetter(ctx, tx, id)
		if err == nil && found {
			found, err = do(tx, id, now)
		}
		if err != nil {
			return 0, errors.Join(fmt.Errorf("fxoutbox: %s %d: %w", action, id, err), schema.Rollback(tx))
		}
		if !found {
			continue
		}
		if _, seen := done[tenant]; !seen {
			tenants = append(tenants, tenant)
		}
		done[tenant] = append(done[tenant], fmt.Sprint(id))
		n++
	}
	for _, tenant := range tenants {
		if _, err := tx.ExecContext(ctx, a.d.Rebind("INSERT INTO "+schema.Quote(a.d, a.t.Repairs)+" (at_ns, action, target, who, why, tenant) VALUES (?, ?, ?, ?, ?, ?)"),
			now, action, "dead letters "+strings.Join(done[tenant], ","), who, why, tenant); err != nil {
			return 0, errors.Join(fmt.Errorf("fxoutbox: %s: record: %w", action, err), schema.Rollback(tx))
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("fxoutbox: %s: commit: %w", action, err)
	}
	return n, nil
}

// tenantOfLetter reads the tenant of the dead letter id in tx; found is
// false when there is no such letter, or (an Admin for one tenant) it is
// another tenant's.
func (a *Admin) tenantOfLetter(ctx context.Context, tx *sql.Tx, id int64) (tenant string, found bool, err error) {
	table, rowID, _ := a.deadTable(id)
	where, args := a.scope(" WHERE id = ?", rowID)
	switch err := tx.QueryRowContext(ctx, a.d.Rebind("SELECT msg_tenant FROM "+table+where), args...).Scan(&tenant); {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	return tenant, true, nil
}

// Repair is one recorded repairing action.
type Repair struct {
	At       time.Time
	Action   string // "replay", "discard"
	Target   string // what it acted on: "dead letters 4,7"
	Who, Why string
	// Tenant is the tenant of what it repaired ("": the default tenant's,
	// and every repair recorded before tenants were). A repair of letters
	// of several tenants is recorded once per tenant.
	Tenant string
}

// Repairs returns the last limit repairing actions (default 100), newest
// first; an Admin for one tenant (ForTenant) returns that tenant's.
func (a *Admin) Repairs(ctx context.Context, limit int) ([]Repair, error) {
	if limit <= 0 {
		limit = 100
	}
	where, args := "", []any{}
	if a.tenant != nil {
		where, args = " WHERE tenant = ?", append(args, *a.tenant)
	}
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT at_ns, action, target, who, why, tenant FROM "+schema.Quote(a.d, a.t.Repairs)+where+" ORDER BY id DESC LIMIT ?"), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: repairs: %w", err)
	}
	defer rows.Close()
	var out []Repair
	for rows.Next() {
		var r Repair
		var at int64
		if err := rows.Scan(&at, &r.Action, &r.Target, &r.Who, &r.Why, &r.Tenant); err != nil {
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

// What the outbox stores, for metrics, health checks and the repair
// tools. Each read is one statement on the database, in no transaction;
// the cost of each is said on its method.

// TopicBacklog is what waits in the outbox for one topic.
type TopicBacklog struct {
	// Topic is the topic, or DeliveryConfig.Topic for the rows of this
	// service's own delivery.
	Topic string
	// Rows is the rows waiting, due or not.
	Rows int
	// Due is the rows due now: all of them, but for rows of this
	// service's own delivery that wait for their next attempt.
	Due int
	// Lag is how long the oldest due row has waited since it was written
	// (a scheduled one: since it fell due), by the outbox's clock: how far
	// the relay is behind on the topic. 0 when none is due.
	Lag time.Duration
}

// Backlog returns every topic's rows waiting in the outbox, by topic (an
// Admin for one tenant: that tenant's rows). It reads the whole outbox
// table (one aggregate over its rows; for one tenant, the same read with
// a condition on the computed tenant column): for a dashboard or a metric
// collected every few seconds, not for a check per request (see Lag).
func (a *Admin) Backlog(ctx context.Context) ([]TopicBacklog, error) {
	now := a.now().UnixNano()
	q, args := a.q.Backlog, []any{now, now}
	if a.tenant != nil {
		q, args = a.d.Rebind("SELECT topic, COUNT(*), SUM(CASE WHEN due_ns <= ? THEN 1 ELSE 0 END),"+
			" MIN(CASE WHEN due_ns <= ? THEN (CASE WHEN due_ns > created_ns THEN due_ns ELSE created_ns END) END)"+
			" FROM "+schema.Quote(a.d, a.t.Outbox)+" WHERE msg_tenant = ? GROUP BY topic ORDER BY topic"), append(args, *a.tenant)
	}
	rows, err := a.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: backlog: %w", err)
	}
	defer rows.Close()
	var out []TopicBacklog
	for rows.Next() {
		var b TopicBacklog
		var oldest sql.NullInt64
		if err := rows.Scan(&b.Topic, &b.Rows, &b.Due, &oldest); err != nil {
			return nil, fmt.Errorf("fxoutbox: backlog: %w", err)
		}
		if oldest.Valid && oldest.Int64 > 0 && oldest.Int64 < now {
			b.Lag = time.Duration(now - oldest.Int64)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// Lag returns how long the oldest row that is due has waited in the
// outbox, over every topic, by the outbox's clock (0: none waits): the
// relay's lag, over every tenant's rows, also for an Admin for one
// tenant (see Backlog for one tenant's). It reads the first row of each topic by the (topic, id)
// index (one loose index scan over the topics, and a row per topic), so
// it costs per topic, not per row: a health check can call it.
func (a *Admin) Lag(ctx context.Context) (time.Duration, error) {
	now := a.now().UnixNano()
	var oldest sql.NullInt64
	if err := a.db.QueryRowContext(ctx, a.q.Lag, now).Scan(&oldest); err != nil {
		return 0, fmt.Errorf("fxoutbox: lag: %w", err)
	}
	if !oldest.Valid || oldest.Int64 <= 0 || oldest.Int64 >= now {
		return 0, nil
	}
	return time.Duration(now - oldest.Int64), nil
}

// TopicDeadLetters is the dead letters of one topic.
type TopicDeadLetters struct {
	Topic string
	// Rows is how many there are.
	Rows int
	// Last is when the newest failed, by the outbox's clock (zero for
	// letters older than the schema's version 4, which recorded no such
	// time).
	Last time.Time
}

// DeadLetters returns how many dead letters each topic has, the outbox's
// and the inbound ones (those not discarded; an Admin for one tenant:
// that tenant's): one aggregate over each table.
func (a *Admin) DeadLetters(ctx context.Context) ([]TopicDeadLetters, error) {
	byTopic := map[string]*TopicDeadLetters{}
	var topics []string
	queries, args := []string{a.q.DeadByTopic, a.q.InboundDeadByTopic}, []any(nil)
	if a.tenant != nil {
		args = []any{*a.tenant}
		for i, table := range []string{a.t.DeadLetters, a.t.InboundDead} {
			queries[i] = a.d.Rebind("SELECT topic, COUNT(*), MAX(failed_ns) FROM " + schema.Quote(a.d, table) +
				" WHERE discarded_ns = 0 AND msg_tenant = ? GROUP BY topic ORDER BY topic")
		}
	}
	for _, q := range queries {
		rows, err := a.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("fxoutbox: dead letters: %w", err)
		}
		for rows.Next() {
			var topic string
			var n int
			var last int64
			if err := rows.Scan(&topic, &n, &last); err != nil {
				_ = rows.Close()
				return nil, fmt.Errorf("fxoutbox: dead letters: %w", err)
			}
			d := byTopic[topic]
			if d == nil {
				d = &TopicDeadLetters{Topic: topic}
				byTopic[topic] = d
				topics = append(topics, topic)
			}
			d.Rows += n
			if t := time.Unix(0, last); last > 0 && t.After(d.Last) {
				d.Last = t
			}
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("fxoutbox: dead letters: %w", err)
		}
	}
	slices.Sort(topics)
	out := make([]TopicDeadLetters, len(topics))
	for i, t := range topics {
		out[i] = *byTopic[t]
	}
	return out, nil
}

// ScheduledSummary is what waits for its time.
type ScheduledSummary struct {
	// Rows is the scheduled messages not yet due, or due and not yet moved
	// into the outbox.
	Rows int
	// Next is the earliest due time among them (zero: none).
	Next time.Time
}

// Scheduled returns how many messages are scheduled and when the next is
// due (an Admin for one tenant: that tenant's): one aggregate over the
// scheduled table.
func (a *Admin) Scheduled(ctx context.Context) (ScheduledSummary, error) {
	var s ScheduledSummary
	var next sql.NullInt64
	q, args := a.q.ScheduledSummary, []any(nil)
	if a.tenant != nil {
		q, args = a.d.Rebind("SELECT COUNT(*), MIN(due_ns) FROM "+schema.Quote(a.d, a.t.Scheduled)+" WHERE msg_tenant = ?"), []any{*a.tenant}
	}
	if err := a.db.QueryRowContext(ctx, q, args...).Scan(&s.Rows, &next); err != nil {
		return s, fmt.Errorf("fxoutbox: scheduled: %w", err)
	}
	if next.Valid {
		s.Next = time.Unix(0, next.Int64)
	}
	return s, nil
}
