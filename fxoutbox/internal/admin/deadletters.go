package admin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// The dead letters, the outbox's and the inbound ones: listed, shown,
// replayed, discarded (see Admin).

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
	// Key is the key an inbound letter parks (see fxbus.InOrder), or "".
	Key string
	// Released is when it was replayed to release its key, by the
	// outbox's clock (zero: it was not): it stays until the subscription
	// has handled it.
	Released time.Time
	// Tenant is the message's tenant (fxbus.MetadataTenant in its
	// metadata; "": the default tenant), as the schema computes it (on
	// MySQL cut at 128 bytes).
	Tenant string
}

// DeadLetterFilter selects dead letters; its zero value selects every one
// that was not discarded.
type DeadLetterFilter struct {
	// Topic, if set, is the only topic.
	Topic string
	// Tenant, if set, is the only tenant: a pointer to "" selects the
	// default tenant's letters; nil, every tenant's. An Admin for one
	// tenant (ForTenant) selects that tenant's whatever this says.
	Tenant *string
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
	// NewestFirst lists the letters that failed last first: what an
	// operator looks for in an incident. Default: the oldest first.
	NewestFirst bool
	// Offset skips that many letters of the order asked for: with Limit,
	// a page (CountDead says how many there are).
	Offset int
}

// ListDead returns the dead letters f selects, the outbox's and the
// inbound ones, by when they failed: the oldest first, or the newest
// (NewestFirst); Offset and Limit page through them.
func (a *Admin) ListDead(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	f.Offset = max(f.Offset, 0)
	var out []DeadLetter
	for _, inbound := range []bool{false, true} {
		letters, err := a.listDead(ctx, f, inbound, f.Offset+f.Limit)
		if err != nil {
			return nil, err
		}
		out = append(out, letters...)
	}
	slices.SortStableFunc(out, func(x, y DeadLetter) int {
		if f.NewestFirst {
			x, y = y, x
		}
		return x.FailedAt.Compare(y.FailedAt)
	})
	out = out[min(f.Offset, len(out)):]
	if len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// CountDead returns how many dead letters f selects (its Limit and Offset
// aside): the total a page of ListDead is out of.
func (a *Admin) CountDead(ctx context.Context, f DeadLetterFilter) (int, error) {
	n := 0
	for _, inbound := range []bool{false, true} {
		if f.Name == "" && f.ErrorContains == "" {
			table, where, args := a.deadQuery(f, inbound)
			var c int
			if err := a.db.QueryRowContext(ctx, a.d.Rebind("SELECT COUNT(*) FROM "+table+where), args...).Scan(&c); err != nil {
				return 0, fmt.Errorf("fxoutbox: dead letters: %w", err)
			}
			n += c
			continue
		}
		letters, err := a.listDead(ctx, f, inbound, math.MaxInt) // the name is in the metadata: read them
		if err != nil {
			return 0, err
		}
		n += len(letters)
	}
	return n, nil
}

// deadTable is the table of the outbox's dead letters, or the inbound
// ones', and the letter's id in it.
func (a *Admin) deadTable(id int64) (table string, rowID int64, inbound bool) {
	if id < 0 {
		return schema.Quote(a.d, a.t.InboundDead), -id, true
	}
	return schema.Quote(a.d, a.t.DeadLetters), id, false
}

const deadColumns = "id, topic, message_id, payload, metadata, error, failed_ns, discarded_ns, discard_reason, msg_tenant"

// inboundColumns are deadColumns and the inbound letters' own.
const inboundColumns = deadColumns + ", msg_key, released_ns"

// listDead reads up to limit of the letters f selects from the outbox's
// table or the inbound one, in f's order.
func (a *Admin) listDead(ctx context.Context, f DeadLetterFilter, inbound bool, limit int) ([]DeadLetter, error) {
	table, where, args := a.deadQuery(f, inbound)
	cols := deadColumns
	if inbound {
		cols = inboundColumns
	}
	// By when they failed, not by id: an outbox letter keeps its row's
	// id, which says when the message was written, and one retried for
	// long fails long after the rows written after it.
	order := " ORDER BY failed_ns, id"
	if f.NewestFirst {
		order = " ORDER BY failed_ns DESC, id DESC"
	}
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT "+cols+" FROM "+table+where+order), args...)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() && len(out) < limit {
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

// deadQuery is the table of f's letters, outbound or inbound, and the
// WHERE clause of what SQL can select of f, with its arguments.
func (a *Admin) deadQuery(f DeadLetterFilter, inbound bool) (table, where string, args []any) {
	table = schema.Quote(a.d, a.t.DeadLetters)
	if inbound {
		table = schema.Quote(a.d, a.t.InboundDead)
	}
	var conds []string
	if f.Discarded {
		conds = append(conds, "discarded_ns > 0")
	} else {
		conds = append(conds, "discarded_ns = 0")
	}
	if f.Topic != "" {
		conds, args = append(conds, "topic = ?"), append(args, f.Topic)
	}
	if f.Tenant != nil {
		conds, args = append(conds, "msg_tenant = ?"), append(args, *f.Tenant)
	}
	if !f.Since.IsZero() {
		conds, args = append(conds, "failed_ns >= ?"), append(args, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		conds, args = append(conds, "failed_ns < ?"), append(args, f.Until.UnixNano())
	}
	where, args = a.scope(" WHERE "+strings.Join(conds, " AND "), args...)
	return table, where, args
}

// Dead returns the dead letter id (an Admin for one tenant: none of
// another tenant's).
func (a *Admin) Dead(ctx context.Context, id int64) (DeadLetter, error) {
	table, rowID, inbound := a.deadTable(id)
	cols := deadColumns
	if inbound {
		cols = inboundColumns
	}
	where, args := a.scope(" WHERE id = ?", rowID)
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT "+cols+" FROM "+table+where), args...)
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
	var failed, discarded, released int64
	dest := []any{&dl.ID, &dl.Topic, &dl.MessageID, &dl.Payload, &meta, &dl.Error, &failed, &discarded, &dl.DiscardReason, &dl.Tenant}
	if inbound {
		dest = append(dest, &dl.Key, &released)
	}
	if err := rows.Scan(dest...); err != nil {
		return dl, fmt.Errorf("fxoutbox: dead letters: %w", err)
	}
	if released > 0 {
		dl.Released = time.Unix(0, released)
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
// transaction: each at the end of its topic (of its key's lane), with its
// message id, payload and metadata as they were (so that a handler that
// had it already skips it, by its inbox), and out of the dead letters; the
// action is recorded with who and why, and with the tenant of the letters
// (once per tenant). A letter already replayed or discarded is skipped,
// as is, for an Admin for one tenant, another tenant's. A replayed letter
// keeps its metadata, its tenant with it. It returns how many it put back; a crash leaves
// all of them replayed or none.
//
// An inbound letter that parks its key (see fxbus.InOrder) is released
// rather than removed: it stays, marked released, until the subscription
// has it back and handled it, so that the key's later messages keep
// waiting behind it; Release replays all of a key's letters.
func (a *Admin) Replay(ctx context.Context, ids []int64, who, why string) (int, error) {
	return a.repair(ctx, "replay", ids, who, why, func(tx *sql.Tx, id int64, now int64) (bool, error) {
		table, rowID, inbound := a.deadTable(id)
		var topic, meta, key string
		q := "SELECT topic, metadata, '' FROM " + table + " WHERE id = ? AND discarded_ns = 0"
		if inbound {
			q = "SELECT topic, metadata, msg_key FROM " + table + " WHERE id = ? AND discarded_ns = 0 AND released_ns = 0"
		}
		switch err := tx.QueryRowContext(ctx, a.d.Rebind(q), rowID).Scan(&topic, &meta, &key); {
		case errors.Is(err, sql.ErrNoRows):
			return false, nil
		case err != nil:
			return false, err
		}
		if _, err := tx.ExecContext(ctx, a.d.Rebind("INSERT INTO "+schema.Quote(a.d, a.t.Outbox)+" (topic, lane, message_id, payload, metadata, created_ns)"+
			" SELECT topic, ?, message_id, payload, ?, ? FROM "+table+" WHERE id = ?"), a.laneOf(topic, meta), replayed(meta, now), now, rowID); err != nil {
			return false, err
		}
		if key != "" {
			_, err := tx.ExecContext(ctx, a.d.Rebind("UPDATE "+table+" SET released_ns = ? WHERE id = ?"), now, rowID)
			return err == nil, err
		}
		_, err := tx.ExecContext(ctx, a.d.Rebind("DELETE FROM "+table+" WHERE id = ?"), rowID)
		return err == nil, err
	})
}

// Discard marks the dead letters ids discarded, with why as the reason
// they keep; the action is recorded with who and why, and with the
// letters' tenant (once per tenant; an Admin for one tenant skips the
// letters of others). A discarded letter
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

// RecordDeadLetter records msg, which a subscription of topic
// dead-lettered, with why, among the inbound dead letters: the
// fxbus.DeadLetterRecorder that fxoutbox.Module gives the bus.
func (a *Admin) RecordDeadLetter(ctx context.Context, topic string, msg *message.Message, reason error) error {
	return a.record(ctx, topic, "", msg, reason.Error())
}

var _ fxbus.DeadLetterRecorder = (*Admin)(nil)

// replayed is a replayed letter's metadata: its own, marked with the
// replay (fxbus.MetadataReplay), so that a broker that deduplicates by
// message id takes it as new. Metadata that is not a JSON object is kept
// as it is.
func replayed(meta string, now int64) string {
	var md map[string]string
	if json.Unmarshal([]byte(meta), &md) != nil {
		return meta
	}
	if md == nil {
		md = map[string]string{}
	}
	md[fxbus.MetadataReplay] = strconv.FormatInt(now, 10)
	out, err := json.Marshal(md)
	if err != nil {
		return meta
	}
	return string(out)
}

// The parked keys of subscriptions that keep their keys' order
// (fxbus.InOrder), on the inbound dead letters table: a key is parked
// while it has a dead letter that is neither discarded nor handled since
// its release. Its first such letter is the one that failed; the others
// wait behind it, in their order (by id). Replaying a letter releases it:
// it goes back to its topic, through the outbox, and stays parked, marked
// released, until it arrives and is handled (then it is deleted) or fails
// again (then it is parked again, in its place). A message of a parked key
// that is not the first released one is parked behind it, in its order.

var _ fxbus.Parking = (*Admin)(nil)

// ParkedBehind begins the error of a dead letter that did not fail but
// was parked behind its key's first one.
const ParkedBehind = "parked behind message"

// WithLanes returns a copy of a that replays keyed dead letters into the
// lanes cfg gives their topics (see RelayConfig.Lanes): the Admin an
// Outbox makes has its relay's; one made by NewAdmin puts every replayed
// row in lane 0 until told.
func (a *Admin) WithLanes(cfg relay.Config) *Admin {
	c := *a
	c.lanes = func(topic string) int { return relay.LanesOf(cfg, topic) }
	return &c
}

// laneOf is the lane of topic a replayed row with metadata meta goes in.
func (a *Admin) laneOf(topic, meta string) int {
	if a.lanes == nil {
		return 0
	}
	var md map[string]string
	if json.Unmarshal([]byte(meta), &md) != nil {
		return 0
	}
	return schema.LaneOf(md[fxbus.MetadataKey], a.lanes(topic))
}

// RecordParked records msg, of topic and key, which a subscription with
// fxbus.InOrder dead-lettered with reason: a dead letter that parks its
// key.
func (a *Admin) RecordParked(ctx context.Context, topic, key string, msg *message.Message, reason error) error {
	return a.record(ctx, topic, key, msg, reason.Error())
}

// record inserts an inbound dead letter.
func (a *Admin) record(ctx context.Context, topic, key string, msg *message.Message, reason string) error {
	meta, err := json.Marshal(msg.Metadata)
	if err != nil {
		return err
	}
	_, err = a.db.ExecContext(ctx, a.d.Rebind("INSERT INTO "+schema.Quote(a.d, a.t.InboundDead)+" (topic, msg_key, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		topic, key, msg.UUID, []byte(msg.Payload), string(meta), reason, a.now().UnixNano())
	return err
}

// ParkedKeys returns topic's keys that have parked messages, each with
// the tenant of its letters (their metadata's, msg_tenant): a key is
// parked per tenant. An Admin for one tenant returns that tenant's.
func (a *Admin) ParkedKeys(ctx context.Context, topic string) ([]fxbus.ParkedKey, error) {
	where, args := a.scope(" WHERE topic = ? AND msg_key <> '' AND discarded_ns = 0", topic)
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT DISTINCT msg_tenant, msg_key FROM "+schema.Quote(a.d, a.t.InboundDead)+where), args...)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: parked keys: %w", err)
	}
	defer rows.Close()
	var keys []fxbus.ParkedKey
	for rows.Next() {
		var k fxbus.ParkedKey
		if err := rows.Scan(&k.Tenant, &k.Key); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// parkedRow is one of a key's parked letters.
type parkedRow struct {
	id       int64
	msgID    string
	released bool
}

// Admit says what a subscription does with msg of a parked key: handle
// it (the key has nothing parked left for msg's tenant, or msg is its
// first letter, released), or park it behind the first, recorded in the
// same transaction as the look at the key's letters. A key is parked per
// tenant: only the letters of msg's tenant (msg_tenant, as its metadata
// names it) hold it back.
func (a *Admin) Admit(ctx context.Context, topic, key string, msg *message.Message) (fxbus.Admission, error) {
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	adm, err := a.admit(ctx, tx, topic, key, msg)
	if err != nil {
		return 0, errors.Join(err, schema.Rollback(tx))
	}
	return adm, tx.Commit()
}

func (a *Admin) admit(ctx context.Context, tx *sql.Tx, topic, key string, msg *message.Message) (fxbus.Admission, error) {
	in := schema.Quote(a.d, a.t.InboundDead)
	// A write that changes nothing first: it locks the key's letters (a
	// release and an admission of the key take turns), and on SQLite it
	// takes the write lock before the read, so that the writes after it
	// cannot fail with SQLITE_BUSY.
	if _, err := tx.ExecContext(ctx, a.d.Rebind("UPDATE "+in+" SET released_ns = released_ns WHERE topic = ? AND msg_key = ? AND discarded_ns = 0"), topic, key); err != nil {
		return 0, err
	}
	rows, err := tx.QueryContext(ctx, a.d.Rebind("SELECT id, message_id, released_ns FROM "+in+
		" WHERE topic = ? AND msg_key = ? AND msg_tenant = ? AND discarded_ns = 0 ORDER BY id"), topic, key, msg.Metadata.Get(fxbus.MetadataTenant))
	if err != nil {
		return 0, err
	}
	var parked []parkedRow
	for rows.Next() {
		var p parkedRow
		var released int64
		if err := rows.Scan(&p.id, &p.msgID, &released); err != nil {
			rows.Close()
			return 0, err
		}
		p.released = released > 0
		parked = append(parked, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	switch {
	case len(parked) == 0:
		return fxbus.AdmitFree, nil
	case parked[0].msgID == msg.UUID && parked[0].released:
		return fxbus.AdmitReplay, nil
	}
	for _, p := range parked {
		if p.msgID != msg.UUID {
			continue
		}
		// A letter of the key, back before its turn (released behind an
		// earlier one that is not, or delivered again): parked again, in
		// its place.
		_, err := tx.ExecContext(ctx, a.d.Rebind("UPDATE "+in+" SET released_ns = 0 WHERE id = ?"), p.id)
		return fxbus.AdmitParked, err
	}
	meta, err := json.Marshal(msg.Metadata)
	if err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, a.d.Rebind("INSERT INTO "+in+" (topic, msg_key, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		topic, key, msg.UUID, []byte(msg.Payload), string(meta), fmt.Sprintf("%s %s of key %q, which failed for good", ParkedBehind, parked[0].msgID, key), a.now().UnixNano())
	return fxbus.AdmitParked, err
}

// Arrived deletes the released letter id of key: handled.
func (a *Admin) Arrived(ctx context.Context, topic, key, id string) error {
	_, err := a.db.ExecContext(ctx, a.d.Rebind("DELETE FROM "+schema.Quote(a.d, a.t.InboundDead)+
		" WHERE topic = ? AND msg_key = ? AND message_id = ? AND released_ns > 0"), topic, key, id)
	return err
}

// Repark parks the released letter id of key again, in its place, with
// reason as its error.
func (a *Admin) Repark(ctx context.Context, topic, key, id string, reason error) error {
	_, err := a.db.ExecContext(ctx, a.d.Rebind("UPDATE "+schema.Quote(a.d, a.t.InboundDead)+
		" SET released_ns = 0, error = ?, failed_ns = ? WHERE topic = ? AND msg_key = ? AND message_id = ? AND released_ns > 0"),
		reason.Error(), a.now().UnixNano(), topic, key, id)
	return err
}

// Release replays every parked letter of topic's key, in their order, in
// one transaction (see Replay), and records it with who and why: the
// key's messages then go, in order, behind the first. It returns how many
// letters it released; none when the key has nothing parked. An Admin
// for one tenant releases that tenant's letters of the key alone.
func (a *Admin) Release(ctx context.Context, topic, key, who, why string) (int, error) {
	if strings.TrimSpace(why) == "" {
		return 0, errors.New("fxoutbox: release: say why: every repair is recorded with its reason")
	}
	where, args := a.scope(" WHERE topic = ? AND msg_key = ? AND discarded_ns = 0 AND released_ns = 0", topic, key)
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT id FROM "+schema.Quote(a.d, a.t.InboundDead)+where+" ORDER BY id"), args...)
	if err != nil {
		return 0, fmt.Errorf("fxoutbox: Release: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, -id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	return a.Replay(ctx, ids, who, strings.TrimSpace("release key "+key+": "+why))
}
