package admin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

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

// ParkedKeys returns topic's keys that have parked messages.
func (a *Admin) ParkedKeys(ctx context.Context, topic string) ([]string, error) {
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT DISTINCT msg_key FROM "+schema.Quote(a.d, a.t.InboundDead)+
		" WHERE topic = ? AND msg_key <> '' AND discarded_ns = 0"), topic)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: parked keys: %w", err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
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
// it (the key has nothing parked left, or msg is its first letter,
// released), or park it behind the first, recorded in the same
// transaction as the look at the key's letters.
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
		" WHERE topic = ? AND msg_key = ? AND discarded_ns = 0 ORDER BY id"), topic, key)
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
// letters it released; none when the key has nothing parked.
func (a *Admin) Release(ctx context.Context, topic, key, who, why string) (int, error) {
	if strings.TrimSpace(why) == "" {
		return 0, errors.New("fxoutbox: release: say why: every repair is recorded with its reason")
	}
	rows, err := a.db.QueryContext(ctx, a.d.Rebind("SELECT id FROM "+schema.Quote(a.d, a.t.InboundDead)+
		" WHERE topic = ? AND msg_key = ? AND discarded_ns = 0 AND released_ns = 0 ORDER BY id"), topic, key)
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
