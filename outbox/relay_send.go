package fxoutbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"time"

	fxbus "github.com/fxcqrs/fxcqrs/bus"

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

// pass sends what it can of every topic it can lease, and reports how
// many rows it sent.
func (r *relay) pass() (int, error) {
	ctx := context.Background()
	var errs []error
	if err := r.promoteDue(ctx); err != nil {
		errs = append(errs, err)
	}
	topics, err := r.passTopics(ctx)
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
		n, err := r.drain(ctx, topic)
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

// hint tells the relay which topics a commit of this process wrote to.
func (r *relay) hint(topics []string) {
	r.hintMu.Lock()
	for _, t := range topics {
		r.hinted[t] = struct{}{}
	}
	r.hintMu.Unlock()
}

// passTopics is what a pass sends: the topics the table holds, found at
// least once per poll interval (and after a pass that left work behind),
// else just those this process's commits announced since the last pass,
// which spares the busy relay a statement per pass.
func (r *relay) passTopics(ctx context.Context) ([]string, error) {
	r.hintMu.Lock()
	hinted := make([]string, 0, len(r.hinted))
	for t := range r.hinted {
		hinted = append(hinted, t)
	}
	clear(r.hinted)
	r.hintMu.Unlock()
	now := r.now()
	if r.discoveredAt.IsZero() || now.Sub(r.discoveredAt) >= r.cfg.PollInterval || now.Before(r.discoveredAt) {
		topics, err := r.topics(ctx)
		if err == nil {
			r.discoveredAt = now
		}
		return topics, err
	}
	sort.Strings(hinted)
	return hinted, nil
}

// batchesPerTurn is how many full batches of one topic a pass sends
// before it turns to the next topic: a hot topic does not wait for a new
// pass per batch, nor hold the others back for long.
const batchesPerTurn = 16

// drain sends topic's batches while this relay holds its lease, up to
// batchesPerTurn of them.
func (r *relay) drain(ctx context.Context, topic string) (int, error) {
	sent := 0
	for range batchesPerTurn {
		ok, err := r.lease(ctx, topic)
		if err != nil || !ok {
			return sent, err // !ok: another relay sends this topic
		}
		n, err := r.send(ctx, topic)
		sent += n
		if err != nil || n < r.cfg.BatchSize {
			return sent, err
		}
		select {
		case <-r.stop:
			return sent, nil
		default:
		}
	}
	return sent, nil
}

func (r *relay) topics(ctx context.Context) ([]string, error) {
	rows, err := r.db.QueryContext(ctx, r.q.topics)
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

// lease takes or renews this relay's lease on topic.
// A lease renewed less than a quarter of its length ago is not renewed
// again: it still has three quarters to run, and the fenced delete checks
// it anyway.
func (r *relay) lease(ctx context.Context, topic string) (bool, error) {
	now := r.now()
	if at, ok := r.renewed[topic]; ok && now.Sub(at) < r.cfg.Lease/4 {
		return true, nil
	}
	delete(r.renewed, topic)
	until := now.UnixNano() + r.cfg.Lease.Nanoseconds()
	res, err := r.db.ExecContext(ctx, r.q.renewLease, r.owner, until, topic, r.owner, now.UnixNano())
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		if n == 1 {
			r.renewed[topic] = now
		}
		return n == 1, err
	}
	res, err = r.db.ExecContext(ctx, r.q.takeLease, topic, r.owner, until)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if n == 1 {
		r.renewed[topic] = now
	}
	return n == 1, err
}

type row struct {
	id       int64
	msgID    string
	payload  []byte
	metadata string
	attempts int
}

// send publishes a batch of topic's rows, in id order, and deletes the
// rows the broker took. A row whose own message the broker refuses goes
// to the dead letter table; the rows after it go in the next batch.
func (r *relay) send(ctx context.Context, topic string) (int, error) {
	rows, err := r.rows(ctx, topic)
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
	sent, delErr := r.deleteSent(ctx, topic, rows[:acked])
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
// by this relay's lease on topic: a relay that lost its lease (it stalled
// past it, and another took the topic over) deletes nothing, and the rows
// go out again from the new owner.
func (r *relay) deleteSent(ctx context.Context, topic string, rows []row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	args := make([]any, 0, len(rows)+3)
	for _, rw := range rows {
		args = append(args, rw.id)
	}
	args = append(args, topic, r.owner, r.now().UnixNano())
	res, err := r.db.ExecContext(ctx, r.q.deleteSent(len(rows)), args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if int(n) < len(rows) {
		delete(r.renewed, topic) // the lease is another's: ask the database next time
		r.log.Warn("relay: lost its lease on a topic in the middle of a batch; the new owner sends those rows again",
			zap.String("topic", topic), zap.Int("rows", len(rows)), zap.Int64("deleted", n))
	}
	r.sent.Add(uint64(n))
	r.inHand.Add(-n)
	return int(n), nil
}

func (r *relay) rows(ctx context.Context, topic string) ([]row, error) {
	rs, err := r.db.QueryContext(ctx, r.q.rows, topic, r.now().UnixNano(), r.cfg.BatchSize)
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
	if _, err := tx.ExecContext(ctx, r.q.dead, rw.id, topic, rw.msgID, rw.payload, rw.metadata, cause.Error(), r.now().UnixNano()); err != nil {
		return errors.Join(err, rollback(tx))
	}
	if _, err := tx.ExecContext(ctx, r.q.deleteRow, rw.id); err != nil {
		return errors.Join(err, rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	r.deadLettered.Add(1)
	return nil
}

func (r *relay) releaseLeases() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.db.ExecContext(ctx, r.q.dropLeases, r.owner); err != nil {
		r.log.Warn("relay: leases not released; they expire", zap.Error(err))
	}
}
