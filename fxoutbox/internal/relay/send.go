package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

type row struct {
	id       int64
	msgID    string
	payload  []byte
	metadata string
	attempts int
}

// send publishes a batch of l's rows, in id order, and deletes the
// rows the broker took. A row whose own message the broker refuses goes
// to the dead letter table; the rows after it go in the next batch.
func (r *Relay) send(ctx context.Context, l schema.Lane) (int, error) {
	topic := l.Topic
	rows, err := r.rows(ctx, l)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	r.inHand.Store(int64(len(rows)))
	defer r.inHand.Store(0)
	if topic == r.delivery.Topic {
		return r.sendLocal(ctx, topic, rows)
	}
	msgs := make([]*message.Message, len(rows))
	for i, rw := range rows {
		msg := message.NewMessage(rw.msgID, rw.payload)
		if err := json.Unmarshal([]byte(rw.metadata), &msg.Metadata); err != nil {
			return 0, r.deadLetter(ctx, topic, rw, fmt.Errorf("metadata: %w", err))
		}
		msgs[i] = msg
	}
	end := r.bus.Send(ctx, topic, msgs)
	acked, err := r.publish(topic, msgs)
	end(err)
	sent, delErr := r.deleteSent(ctx, l.Lease(), rows[:acked])
	switch {
	case delErr != nil:
		return sent, delErr // published, still in the outbox: sent again, at least once
	case err == nil:
		return sent, nil
	case r.cfg.Undeliverable(err):
		if err := r.deadLetter(ctx, topic, rows[acked], err); err != nil {
			return sent, err
		}
		return sent + 1, nil // progress: the rows after it go in the next pass
	}
	r.failures.Add(1)
	return sent, &brokerError{fmt.Errorf("publish to %s: %w", topic, err)}
}

// publish sends msgs to topic, in order, and returns how many, from the
// first, the broker took: as one batch when the publisher can
// (fxbus.BatchPublisher), else one by one, each waited for.
func (r *Relay) publish(topic string, msgs []*message.Message) (int, error) {
	if bp, ok := r.pub.(fxbus.BatchPublisher); ok {
		return bp.PublishBatch(topic, msgs)
	}
	for i, msg := range msgs {
		if err := r.pub.Publish(topic, msg); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// deleteSent deletes the rows the broker took, in one statement, fenced
// by this relay's lease named lease (its lane's): a relay that lost its lease (it stalled
// past it, and another took the topic over) deletes nothing, and the rows
// go out again from the new owner.
func (r *Relay) deleteSent(ctx context.Context, lease string, rows []row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	args := make([]any, 0, len(rows)+3)
	for _, rw := range rows {
		args = append(args, rw.id)
	}
	args = append(args, lease, r.leases.Owner(), r.now().UnixNano())
	res, err := r.db.ExecContext(ctx, r.q.DeleteSent(len(rows)), args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if int(n) < len(rows) {
		r.leases.Lost(lease) // the lease is another's: ask the database next time
		r.log.Warn("relay: lost its lease on a lane in the middle of a batch; the new owner sends those rows again",
			zap.String("lease", lease), zap.Int("rows", len(rows)), zap.Int64("deleted", n))
	}
	r.sent.Add(uint64(n))
	r.inHand.Add(-n)
	return int(n), nil
}

// rows reads a batch of l's due rows, in id order.
func (r *Relay) rows(ctx context.Context, l schema.Lane) ([]row, error) {
	return r.queryRows(ctx, r.q.Rows, l.Topic, l.N, r.now().UnixNano(), r.cfg.BatchSize)
}

// rowsAfter reads a batch of l's due rows after the row id after, in id
// order.
func (r *Relay) rowsAfter(ctx context.Context, l schema.Lane, after int64) ([]row, error) {
	return r.queryRows(ctx, r.q.RowsAfter, l.Topic, l.N, r.now().UnixNano(), after, r.cfg.BatchSize)
}

func (r *Relay) queryRows(ctx context.Context, query string, args ...any) ([]row, error) {
	rs, err := r.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var rw row
		if err := rs.Scan(&rw.id, &rw.msgID, &rw.payload, &rw.metadata, &rw.attempts); err != nil {
			return nil, err
		}
		out = append(out, rw)
	}
	return out, rs.Err()
}

// deadLetter moves a row to the dead letter table, in one transaction.
func (r *Relay) deadLetter(ctx context.Context, topic string, rw row, cause error) error {
	r.log.Error("relay: message cannot be delivered; moved to the dead letter table",
		zap.String("topic", topic), zap.String("messageId", rw.msgID), zap.Int64("row", rw.id), zap.Error(cause))
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, r.q.Dead, rw.id, topic, rw.msgID, rw.payload, rw.metadata, cause.Error(), r.now().UnixNano()); err != nil {
		return errors.Join(err, schema.Rollback(tx))
	}
	if _, err := tx.ExecContext(ctx, r.q.DeleteRow, rw.id); err != nil {
		return errors.Join(err, schema.Rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	r.deadLettered.Add(1)
	return nil
}
