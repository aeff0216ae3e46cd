package fxoutbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	fxbus "github.com/fxcqrs/fxcqrs/bus"
)

// Admin reads and repairs what the outbox's tables hold: the read API
// (Backlog, Lag, DeadLetters, Scheduled, Leases), and the dead letters,
// listed, replayed and discarded. It needs only the database: no bus, no
// relay, no running service (the command line, cmd/fxcqrs, uses it), and
// it is safe to use while replicas run: a replay is one transaction,
// which the relays see as new rows.
type Admin struct {
	db  *sql.DB
	d   Dialect
	t   Tables
	q   queries
	now func() time.Time
}

// NewAdmin returns the Admin of db's outbox tables (t: defaults for the
// empty names), on the clock now (nil: time.Now), which must be the
// services' for the lags and ages it reports to mean anything.
func NewAdmin(db *sql.DB, d Dialect, t Tables, now func() time.Time) (*Admin, error) {
	if db == nil {
		return nil, errors.New("fxoutbox.NewAdmin: nil *sql.DB")
	}
	if d < PostgreSQL || d > SQLite {
		return nil, fmt.Errorf("fxoutbox.NewAdmin: unknown dialect %v", d)
	}
	t = t.withDefaults()
	if err := t.validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Admin{db: db, d: d, t: t, q: d.queries(t), now: now}, nil
}

// Admin returns the outbox's Admin, on its clock.
func (o *Outbox) Admin() *Admin { return o.admin }

// DeadLetter is one row the relay could not deliver, or whose delivery in
// this service failed for good, or (Inbound) a message a subscription of
// this service dead-lettered.
type DeadLetter struct {
	// ID is the letter's id, by which Replay and Discard take it:
	// positive for the outbox's, negative for an inbound one.
	ID int64
	// Inbound is a message a subscription dead-lettered (recorded beside
	// its dead letter topic); its replay publishes it to its topic again,
	// through the outbox, for every subscriber of the topic (those with
	// the inbox skip it if they had it).
	Inbound bool
	// Topic is where it was going.
	Topic string
	// MessageID is the message's id, which a replay keeps: the inbox of a
	// handler that had it already skips it.
	MessageID string
	// Name is the event's name on the wire (fxbus.MetadataName).
	Name string
	// Payload is the message as it would have been sent: untrusted input
	// to whoever shows it.
	Payload []byte
	// Metadata is the message's metadata.
	Metadata map[string]string
	// Error is why it failed.
	Error string
	// FailedAt is when, by the outbox's clock (zero for letters older than
	// the schema's version 4).
	FailedAt time.Time
	// Discarded is when it was discarded (zero: it was not), and
	// DiscardReason why.
	Discarded     time.Time
	DiscardReason string
}

// DeadLetterFilter selects dead letters; its zero value selects every one
// that was not discarded.
type DeadLetterFilter struct {
	// Topic, if set, is the only topic.
	Topic string
	// Name, if set, is the only event name.
	Name string
	// ErrorContains, if set, must be in the letter's error.
	ErrorContains string
	// Since and Until, if set, bound when it failed: [Since, Until).
	Since, Until time.Time
	// Discarded selects the discarded letters instead.
	Discarded bool
	// Limit bounds how many are returned. Default 100.
	Limit int
}

// ListDead returns the dead letters f selects, the outbox's and the
// inbound ones, by when they failed.
func (a *Admin) ListDead(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var out []DeadLetter
	for _, inbound := range []bool{false, true} {
		letters, err := a.listDead(ctx, f, inbound)
		if err != nil {
			return nil, err
		}
		out = append(out, letters...)
	}
	slices.SortStableFunc(out, func(x, y DeadLetter) int { return x.FailedAt.Compare(y.FailedAt) })
	if len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// deadTable is the table of the outbox's dead letters, or the inbound
// ones', and the letter's id in it.
func (a *Admin) deadTable(id int64) (table string, rowID int64, inbound bool) {
	if id < 0 {
		return a.d.quote(a.t.InboundDead), -id, true
	}
	return a.d.quote(a.t.DeadLetters), id, false
}

const deadColumns = "id, topic, message_id, payload, metadata, error, failed_ns, discarded_ns, discard_reason"

func (a *Admin) listDead(ctx context.Context, f DeadLetterFilter, inbound bool) ([]DeadLetter, error) {
	table := a.d.quote(a.t.DeadLetters)
	if inbound {
		table = a.d.quote(a.t.InboundDead)
	}
	q := "SELECT " + deadColumns + " FROM " + table
	var where []string
	var args []any
	if f.Discarded {
		where = append(where, "discarded_ns > 0")
	} else {
		where = append(where, "discarded_ns = 0")
	}
	if f.Topic != "" {
		where, args = append(where, "topic = ?"), append(args, f.Topic)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "failed_ns >= ?"), append(args, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		where, args = append(where, "failed_ns < ?"), append(args, f.Until.UnixNano())
	}
	q += " WHERE " + strings.Join(where, " AND ") + " ORDER BY id"
	rows, err := a.db.QueryContext(ctx, a.d.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() && len(out) < f.Limit {
		dl, err := scanDead(rows, inbound)
		if err != nil {
			return nil, err
		}
		if f.Name != "" && dl.Name != f.Name || f.ErrorContains != "" && !strings.Contains(dl.Error, f.ErrorContains) {
			continue
		}
		out = append(out, dl)
	}
	return out, rows.Err()
}

// Dead returns the dead letter id.
func (a *Admin) Dead(ctx context.Context, id int64) (DeadLetter, error) {
	table, rowID, inbound := a.deadTable(id)
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT "+deadColumns+" FROM "+table+" WHERE id = ?"), rowID)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("fxoutbox: dead letter %d: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return DeadLetter{}, errors.Join(fmt.Errorf("fxoutbox: no dead letter %d", id), rows.Err())
	}
	return scanDead(rows, inbound)
}

func scanDead(rows *sql.Rows, inbound bool) (DeadLetter, error) {
	dl := DeadLetter{Inbound: inbound}
	var meta string
	var failed, discarded int64
	if err := rows.Scan(&dl.ID, &dl.Topic, &dl.MessageID, &dl.Payload, &meta, &dl.Error, &failed, &discarded, &dl.DiscardReason); err != nil {
		return dl, fmt.Errorf("fxoutbox: dead letters: %w", err)
	}
	if err := json.Unmarshal([]byte(meta), &dl.Metadata); err != nil {
		dl.Metadata = map[string]string{"": meta} // shown as stored
	}
	dl.Name = dl.Metadata[fxbus.MetadataName]
	if inbound {
		dl.ID = -dl.ID
	}
	if failed > 0 {
		dl.FailedAt = time.Unix(0, failed)
	}
	if discarded > 0 {
		dl.Discarded = time.Unix(0, discarded)
	}
	return dl, nil
}

// Replay puts the dead letters ids back into the outbox, in one
// transaction: each at the end of its topic, with its message id, payload
// and metadata as they were (so that a handler that had it already skips
// it, by its inbox), and out of the dead letters; the action is recorded
// with who and why. A letter already replayed or discarded is skipped. It
// returns how many it put back; a crash leaves all of them replayed or
// none.
func (a *Admin) Replay(ctx context.Context, ids []int64, who, why string) (int, error) {
	return a.repair(ctx, "replay", ids, who, why, func(tx *sql.Tx, id int64, now int64) (bool, error) {
		table, rowID, _ := a.deadTable(id)
		res, err := tx.ExecContext(ctx, a.d.Rebind("INSERT INTO "+a.d.quote(a.t.Outbox)+" (topic, message_id, payload, metadata, created_ns)"+
			" SELECT topic, message_id, payload, metadata, ? FROM "+table+" WHERE id = ? AND discarded_ns = 0"), now, rowID)
		if err != nil {
			return false, err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return false, err
		}
		_, err = tx.ExecContext(ctx, a.d.Rebind("DELETE FROM "+table+" WHERE id = ?"), rowID)
		return err == nil, err
	})
}

// Discard marks the dead letters ids discarded, with why as the reason
// they keep; the action is recorded with who and why. A discarded letter
// stays, listed with DeadLetterFilter.Discarded. It returns how many it
// discarded.
func (a *Admin) Discard(ctx context.Context, ids []int64, who, why string) (int, error) {
	if strings.TrimSpace(why) == "" {
		return 0, errors.New("fxoutbox: Discard: say why: the reason is what the letter keeps")
	}
	return a.repair(ctx, "discard", ids, who, why, func(tx *sql.Tx, id int64, now int64) (bool, error) {
		table, rowID, _ := a.deadTable(id)
		res, err := tx.ExecContext(ctx, a.d.Rebind("UPDATE "+table+" SET discarded_ns = ?, discard_reason = ? WHERE id = ? AND discarded_ns = 0"), now, why, rowID)
		if err != nil {
			return false, err
		}
		n, err := res.RowsAffected()
		return n > 0, err
	})
}

// repair runs one action on ids in one transaction, and records it.
func (a *Admin) repair(ctx context.Context, action string, ids []int64, who, why string, do func(tx *sql.Tx, id, now int64) (bool, error)) (int, error) {
	if strings.TrimSpace(who) == "" {
		return 0, fmt.Errorf("fxoutbox: %s: say who asks: every repair is recorded", action)
	}
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("fxoutbox: %s: %w", action, err)
	}
	now := a.now().UnixNano()
	var done []string
	for _, id := range ids {
		ok, err := do(tx, id, now)
		if err != nil {
			return 0, errors.Join(fmt.Errorf("fxoutbox: %s %d: %w", action, id, err), rollback(tx))
		}
		if ok {
			done = append(done, fmt.Sprint(id))
		}
	}
	if len(done) > 0 {
		if _, err := tx.ExecContext(ctx, a.d.Rebind("INSERT INTO "+a.d.quote(a.t.Repairs)+" (at_ns, action, target, who, why) VALUES (?, ?, ?, ?, ?)"),
			now, action, "dead letters "+strings.Join(done, ","), who, why); err != nil {
			return 0, errors.Join(fmt.Errorf("fxoutbox: %s: record: %w", action, err), rollback(tx))
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
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT at_ns, action, target, who, why FROM "+a.d.quote(a.t.Repairs)+" ORDER BY id DESC LIMIT ?"), limit)
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

// Lease is which relay owns a topic, until when.
type Lease struct {
	Topic, Owner string
	Until        time.Time
}

// Leases returns the relays' leases, by topic.
func (a *Admin) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := a.db.QueryContext(ctx, "SELECT topic, owner, until_ns FROM "+a.d.quote(a.t.Leases)+" ORDER BY topic")
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

// RecordDeadLetter records msg, which a subscription of topic
// dead-lettered, with why, among the inbound dead letters: the
// fxbus.DeadLetterRecorder that fxoutbox.Module gives the bus.
func (a *Admin) RecordDeadLetter(ctx context.Context, topic string, msg *message.Message, reason error) error {
	meta, err := json.Marshal(msg.Metadata)
	if err != nil {
		return err
	}
	_, err = a.db.ExecContext(ctx, a.d.Rebind("INSERT INTO "+a.d.quote(a.t.InboundDead)+" (topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?)"),
		topic, msg.UUID, []byte(msg.Payload), string(meta), reason.Error(), a.now().UnixNano())
	return err
}

var _ fxbus.DeadLetterRecorder = (*Admin)(nil)
