package fxoutbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sort"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/zap"
)

// One pass of the relay: the topics, their leases, their batches.

// safePass is pass with its panic (a publisher's, say) turned into an
// error: the relay runs on a goroutine of its own, where a panic would
// take the process down. The rows it was sending wait, as for any error.
func (r *relay) safePass() (sent int, err error) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("relay: a pass panicked; its rows wait", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("fxoutbox: relay panicked: %v", v)
		}
	}()
	return r.pass()
}

// pass sends what it can of every topic's lanes it can lease, and
// reports how many rows it sent.
func (r *relay) pass() (int, error) {
	ctx := context.Background()
	var errs []error
	if err := r.promoteDue(ctx); err != nil {
		errs = append(errs, err)
	}
	topics, lanes, err := r.passLanes(ctx)
	if err != nil {
		return 0, errors.Join(append(errs, err)...)
	}
	sent := 0
	for _, topic := range topics {
		if topic == r.delivery.Topic && (r.delivering == nil || !r.delivering()) {
			continue // no mediator here: a replica that has one delivers them
		}
		select {
		case <-r.stop:
			return sent, nil
		default:
		}
		n, err := r.sendTopic(ctx, topic, lanes[topic])
		sent += n
		if err != nil {
			errs = append(errs, err) // other topics go on
		}
	}
	if len(errs) > 0 || sent >= r.cfg.BatchSize {
		r.discoveredAt = time.Time{} // rows may wait that no commit announces: look at the table next time
	}
	return sent, errors.Join(errs...)
}

// hint tells the relay which lanes a commit of this process wrote to.
func (r *relay) hint(lanes []lane) {
	r.hintMu.Lock()
	for _, l := range lanes {
		r.hinted[l] = struct{}{}
	}
	r.hintMu.Unlock()
}

// passLanes is what a pass sends, topic by topic in order, each topic's
// lanes in order: the lanes the table holds, found at least once per poll
// interval (and after a pass that left work behind), else just those this
// process's commits announced since the last pass, which spares the busy
// relay a statement per pass.
func (r *relay) passLanes(ctx context.Context) ([]string, map[string][]int, error) {
	r.hintMu.Lock()
	lanes := map[string][]int{}
	for l := range r.hinted {
		lanes[l.topic] = append(lanes[l.topic], l.n)
	}
	clear(r.hinted)
	r.hintMu.Unlock()
	now := r.now()
	if r.discoveredAt.IsZero() || now.Sub(r.discoveredAt) >= r.cfg.PollInterval || now.Before(r.discoveredAt) {
		found, err := r.topics(ctx)
		if err != nil {
			return nil, nil, err
		}
		for _, topic := range found {
			ns, err := r.laneNumbers(ctx, topic)
			if err != nil {
				return nil, nil, err
			}
			lanes[topic] = append(lanes[topic], ns...)
		}
		r.discoveredAt = now
	}
	topics := make([]string, 0, len(lanes))
	for topic, ns := range lanes {
		topics = append(topics, topic)
		slices.Sort(ns)
		lanes[topic] = slices.Compact(ns)
	}
	sort.Strings(topics)
	return topics, lanes, nil
}

// batchesPerTurn is how many full batches of one lane a pass sends
// before it turns to the next lane: a hot lane does not wait for a new
// pass per batch, nor hold the others back for long.
const batchesPerTurn = 16

// drain sends l's batches while this relay holds its lease, up to
// batchesPerTurn of them; held says whether it held the lease.
func (r *relay) drain(ctx context.Context, l lane) (sent int, held bool, err error) {
	for range batchesPerTurn {
		ok, err := r.lease(ctx, l.lease())
		if err != nil || !ok {
			return sent, held, err // !ok: another relay sends this lane
		}
		held = true
		n, err := r.send(ctx, l)
		sent += n
		if err != nil || n < r.cfg.BatchSize {
			return sent, held, err
		}
		select {
		case <-r.stop:
			return sent, held, nil
		default:
		}
	}
	return sent, held, nil
}

func (r *relay) topics(ctx context.Context) ([]string, error) {
	rows, err := r.db.QueryContext(ctx, r.q.Topics)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var topics []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		topics = append(topics, t)
	}
	sort.Strings(topics)
	return topics, rows.Err()
}

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
func (r *relay) send(ctx context.Context, l lane) (int, error) {
	topic := l.topic
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
	end := r.traceSend(ctx, topic, msgs)
	acked, err := r.publish(topic, msgs)
	end(err)
	sent, delErr := r.deleteSent(ctx, l.lease(), rows[:acked])
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
func (r *relay) publish(topic string, msgs []*message.Message) (int, error) {
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
func (r *relay) deleteSent(ctx context.Context, lease string, rows []row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	args := make([]any, 0, len(rows)+3)
	for _, rw := range rows {
		args = append(args, rw.id)
	}
	args = append(args, lease, r.owner, r.now().UnixNano())
	res, err := r.db.ExecContext(ctx, r.q.DeleteSent(len(rows)), args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if int(n) < len(rows) {
		delete(r.renewed, lease) // the lease is another's: ask the database next time
		r.log.Warn("relay: lost its lease on a lane in the middle of a batch; the new owner sends those rows again",
			zap.String("lease", lease), zap.Int("rows", len(rows)), zap.Int64("deleted", n))
	}
	r.sent.Add(uint64(n))
	r.inHand.Add(-n)
	return int(n), nil
}

// rows reads a batch of l's due rows, in id order.
func (r *relay) rows(ctx context.Context, l lane) ([]row, error) {
	return r.queryRows(ctx, r.q.Rows, l.topic, l.n, r.now().UnixNano(), r.cfg.BatchSize)
}

// rowsAfter reads a batch of l's due rows after the row id after, in id
// order.
func (r *relay) rowsAfter(ctx context.Context, l lane, after int64) ([]row, error) {
	return r.queryRows(ctx, r.q.RowsAfter, l.topic, l.n, r.now().UnixNano(), after, r.cfg.BatchSize)
}

func (r *relay) queryRows(ctx context.Context, query string, args ...any) ([]row, error) {
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
func (r *relay) deadLetter(ctx context.Context, topic string, rw row, cause error) error {
	r.log.Error("relay: message cannot be delivered; moved to the dead letter table",
		zap.String("topic", topic), zap.String("messageId", rw.msgID), zap.Int64("row", rw.id), zap.Error(cause))
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, r.q.Dead, rw.id, topic, rw.msgID, rw.payload, rw.metadata, cause.Error(), r.now().UnixNano()); err != nil {
		return errors.Join(err, rollback(tx))
	}
	if _, err := tx.ExecContext(ctx, r.q.DeleteRow, rw.id); err != nil {
		return errors.Join(err, rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	r.deadLettered.Add(1)
	return nil
}
