package relay

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// sender sends one lane's batch: it reads the rows, publishes them (or
// delivers the delivery topic's to this service's mediator, local.go),
// deletes those that went out under the lane's lease, and dead-letters
// what cannot go. It runs on the relay's goroutine, with its leases.
type sender struct {
	db       *sql.DB
	q        schema.Queries
	bus      Bus
	pub      message.Publisher
	local    Local
	log      *zap.Logger
	cfg      Config
	delivery DeliveryConfig
	now      func() time.Time
	leases   *lease.Holder
	wake     chan struct{}   // the relay's: what commits announce, which a durable delivery reads too
	stop     <-chan struct{} // the relay's

	*counters // the relay's, shared by the senders of every store

	progress  map[schema.Lane]*progress   // each lane's published rows not yet deleted (progress.go)
	sharing   map[schema.Lane]*laneShares // what the relay knows of each lane's tenants (fair.go)
	wallNow   func() time.Time            // the progress windows' clock (Params.WallNow)
	wallAfter func(time.Duration) <-chan time.Time
}

// counters is what the relay's senders count, one set for all stores.
type counters struct {
	sent, deadLettered, failures atomic.Uint64
	expired                      atomic.Uint64 // dead-lettered apart from deadLettered: see expire
	inHand                       atomic.Int64  // rows read and not yet deleted, in the batch being sent
	unrecorded                   atomic.Int64  // rows published and not yet deleted, in progress
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
//
// The rows published are deleted once per window (progress.go), or at
// once when Config.ProgressInterval is negative; until then they are
// skipped when the lane is read (rowsBeside). It returns how many rows it published (or
// delivered, on the delivery topic).
//
// Each of its statements (the read, the delete, a dead letter's move) is
// a step of the store's turn under its own deadline (inStep); the
// publish is not. A step that hangs ends the batch: what was published
// and not deleted stays l's progress, skipped when l is read and deleted
// when it is next recorded (or sent again by another relay that takes l
// over: at least once, never out of order).
func (s *sender) send(ctx context.Context, l schema.Lane) (int, error) {
	topic := l.Topic
	p := s.progress[l]
	if p != nil && (len(p.ids) >= s.cfg.ProgressRows || !s.deferred()) {
		// A full window whose delete failed (or, deleting at once, a
		// delete that failed): no more rows until it is recorded, so
		// that what a crash sends again stays bounded.
		if err := s.inStep(ctx, func(ctx context.Context) error { return s.record(ctx, l) }); err != nil {
			return 0, err
		}
		p = s.progress[l]
	}
	var rows []row
	err := s.inStep(ctx, func(ctx context.Context) (err error) {
		rows, err = s.batch(ctx, l, p) // shared between l's tenants (fair.go)
		return err
	})
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	s.inHand.Store(int64(len(rows)))
	defer s.inHand.Store(0)
	if topic == s.delivery.Topic {
		return s.sendLocal(ctx, topic, rows)
	}
	msgs := make([]*message.Message, len(rows))
	for i, rw := range rows {
		msg := message.NewMessage(rw.msgID, rw.payload)
		if err := json.Unmarshal([]byte(rw.metadata), &msg.Metadata); err != nil {
			return 0, s.deadLetter(ctx, topic, rw, fmt.Errorf("metadata: %w", err))
		}
		if err := s.upcast(msg); err != nil {
			return s.unreadable(ctx, topic, rw, err)
		}
		msgs[i] = msg
	}
	end := s.bus.Send(ctx, topic, msgs)
	acked, err := s.publish(topic, msgs)
	end(err)
	var (
		sent   = acked
		delErr error
	)
	if s.deferred() {
		s.published(l, rows[:acked])
		if s.due(l, s.wallNow()) {
			delErr = s.inStep(ctx, func(ctx context.Context) error { return s.record(ctx, l) })
		}
	} else {
		delErr = s.inStep(ctx, func(ctx context.Context) (err error) {
			sent, err = s.deleteSent(ctx, l.Lease(), rows[:acked])
			return err
		})
		if delErr != nil {
			// Published, not deleted: l's progress, as a window's, so
			// that the next batch neither sends them again nor loses them.
			s.published(l, rows[sent:acked])
			sent = acked
		}
	}
	switch {
	case delErr != nil:
		return sent, delErr // published, still in the outbox: recorded later, or sent again (at least once)
	case err == nil:
		return sent, nil
	case s.cfg.Undeliverable(err):
		if err := s.deadLetter(ctx, topic, rows[acked], err); err != nil {
			return sent, err
		}
		return sent + 1, nil // progress: the rows after it go in the next pass
	}
	s.failures.Add(1)
	return sent, &brokerError{fmt.Errorf("publish to %s: %w", topic, err)}
}

// publish sends msgs to topic, in order, and returns how many, from the
// first, the broker took: as one batch when the publisher can
// (fxbus.BatchPublisher), else one by one, each waited for.
func (s *sender) publish(topic string, msgs []*message.Message) (int, error) {
	if bp, ok := s.pub.(fxbus.BatchPublisher); ok {
		return bp.PublishBatch(topic, msgs)
	}
	for i, msg := range msgs {
		if err := s.pub.Publish(topic, msg); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// deleteSent deletes the rows the broker took, in one statement, fenced
// by this relay's lease named lease (its lane's): a relay that lost its lease (it stalled
// past it, and another took the topic over) deletes nothing, and the rows
// go out again from the new owner.
func (s *sender) deleteSent(ctx context.Context, lease string, rows []row) (int, error) {
	ids := make([]int64, len(rows))
	for i, rw := range rows {
		ids[i] = rw.id
	}
	n, err := s.deleteIDs(ctx, lease, ids)
	s.inHand.Add(-int64(n))
	return n, err
}

// maxDelete is the most ids one fenced delete names.
const maxDelete = 1000

// deleteIDs deletes the rows ids, sent under the lease named lease, in a
// statement per maxDelete of them, each fenced by the lease; it stops at
// the first the fence held back.
func (s *sender) deleteIDs(ctx context.Context, lease string, ids []int64) (int, error) {
	deleted := 0
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxDelete)]
		ids = ids[len(chunk):]
		args := make([]any, 0, len(chunk)+3)
		for _, id := range chunk {
			args = append(args, id)
		}
		args = append(args, lease, s.leases.Owner(), s.now().UnixNano())
		res, err := s.db.ExecContext(ctx, s.q.DeleteSent(len(chunk)), args...)
		if err != nil {
			return deleted, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return deleted, err
		}
		s.sent.Add(uint64(n))
		deleted += int(n)
		if int(n) < len(chunk) {
			// Fewer rows than it names: the fence held them back (the
			// lease is another's), or some were gone already, deleted by
			// a statement of this relay's that ran past its deadline and
			// that the server finished all the same (MySQL does). The
			// lease says which.
			if held, err := s.leases.Take(ctx, lease); err != nil {
				return deleted, err
			} else if held {
				continue
			}
			s.leases.Lost(lease) // the lease is another's: ask the database next time
			s.log.Warn("relay: lost its lease on a lane with rows sent and not deleted; the new owner sends those rows again",
				zap.String("lease", lease), zap.Int("rows", len(chunk)), zap.Int64("deleted", n))
			break
		}
	}
	return deleted, nil
}

// rows reads a batch of l's due rows, in id order.
func (s *sender) rows(ctx context.Context, l schema.Lane) ([]row, error) {
	return s.queryRows(ctx, s.q.Rows, l.Topic, l.N, s.now().UnixNano(), s.cfg.BatchSize)
}

// rowsAfter reads a batch of l's due rows after the row id after, in id
// order.
func (s *sender) rowsAfter(ctx context.Context, l schema.Lane, after int64) ([]row, error) {
	return s.queryRows(ctx, s.q.RowsAfter, l.Topic, l.N, s.now().UnixNano(), after, s.cfg.BatchSize)
}

// rowsBeside reads a batch of l's due rows that p does not hold, in id
// order: the rows after p's last and any row below it that committed
// after p's rows were read (a late commit: progress.go). One query reads
// the lane from its start, with only the ids of the rows up to p's last;
// in the rare pass that finds a late row among them, a second reads them
// whole.
func (s *sender) rowsBeside(ctx context.Context, l schema.Lane, p *progress) ([]row, error) {
	last, now, limit := p.last(), s.now().UnixNano(), s.cfg.BatchSize+len(p.ids)
	rows, err := s.queryRows(ctx, s.q.RowsBeside, last, last, last, l.Topic, l.N, now, limit)
	if err != nil {
		return nil, err
	}
	late := false
	out := rows[:0]
	for _, rw := range rows {
		switch {
		case rw.id > last:
			out = append(out, rw)
		case !p.has(rw.id):
			late = true
		}
	}
	if late {
		if rows, err = s.queryRows(ctx, s.q.Rows, l.Topic, l.N, now, limit); err != nil {
			return nil, err
		}
		out = rows[:0]
		for _, rw := range rows {
			if !p.has(rw.id) {
				out = append(out, rw)
			}
		}
	}
	return out[:min(len(out), s.cfg.BatchSize)], nil
}

func (s *sender) queryRows(ctx context.Context, query string, args ...any) ([]row, error) {
	rs, err := s.db.QueryContext(ctx, query, args...)
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

// deadLetter moves a row to the dead letter table, in one transaction:
// a step of the store's turn (inStep).
func (s *sender) deadLetter(ctx context.Context, topic string, rw row, cause error) error {
	s.log.Error("relay: message cannot be delivered; moved to the dead letter table",
		zap.String("topic", topic), zap.String("messageId", rw.msgID), zap.Int64("row", rw.id), zap.Error(cause))
	if err := s.inStep(ctx, func(ctx context.Context) error { return s.bury(ctx, topic, rw, cause) }); err != nil {
		return err
	}
	s.deadLettered.Add(1)
	return nil
}

// bury moves rw to the dead letter table with cause as its reason, in one
// transaction.
func (s *sender) bury(ctx context.Context, topic string, rw row, cause error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.q.Dead, rw.id, topic, rw.msgID, rw.payload, rw.metadata, cause.Error(), s.now().UnixNano()); err != nil {
		return errors.Join(err, schema.Rollback(tx))
	}
	if _, err := tx.ExecContext(ctx, s.q.DeleteRow, rw.id); err != nil {
		return errors.Join(err, schema.Rollback(tx))
	}
	return tx.Commit()
}

// brokerError is a publish the broker refused or could not take.
type brokerError struct{ err error }

func (e *brokerError) Error() string { return e.err.Error() }
func (e *brokerError) Unwrap() error { return e.err }
