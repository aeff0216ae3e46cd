package fxoutbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	fxbus "github.com/fxcqrs/fxcqrs/bus"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

func typeOf(v any) reflect.Type { return reflect.TypeOf(v) }

// relay delivers the outbox's rows to the broker: topic by topic, in the
// order the outbox recorded them (by id: the order of first write, not of
// commit), each topic under a lease so that one relay at a time sends it.
type relay struct {
	db    *sql.DB
	q     queries
	pub   message.Publisher
	log   *zap.Logger
	cfg   RelayConfig
	owner string
	now   func() time.Time

	renewed map[string]time.Time // by now: when this relay last renewed its lease on each topic (its goroutine's alone)

	cleanInbox func(context.Context) (int64, error) // the outbox's CleanInbox
	cleanedAt  time.Time                            // by now; zero: never

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once

	sent, deadLettered, failures atomic.Uint64
	inHand                       atomic.Int64 // rows read and not yet deleted, in the batch being sent
}

// RelayConfig configures the relay. Every field is optional.
type RelayConfig struct {
	// PollInterval is how often the relay looks for rows that no commit
	// in this process announced: rows of other processes, and of a
	// process that crashed. Default 1s. A commit in this process wakes it
	// at once.
	PollInterval time.Duration `json:"pollInterval" yaml:"pollInterval"`
	// BatchSize is how many rows of a topic one batch reads: they are
	// published in id order, as one batch when the bus's publisher is an
	// fxbus.BatchPublisher (NATS JetStream through natsjs), else one by
	// one, and the ones the broker took are deleted in one statement.
	// Default 100.
	BatchSize int `json:"batchSize" yaml:"batchSize"`
	// Lease is how long a relay owns a topic without renewing it; it
	// renews it before each batch. A relay that dies leaves its topics to
	// the others (or to its own restart) once it expires: with the
	// defaults, delivery resumes within Lease + PollInterval, 5s. Default
	// 4s.
	Lease time.Duration `json:"lease" yaml:"lease"`
	// RetryInitial is the first wait after the broker refused. Default
	// 100ms; it doubles up to RetryMax.
	RetryInitial time.Duration `json:"retryInitial" yaml:"retryInitial"`
	// RetryMax bounds the wait between tries. Default 10s.
	RetryMax time.Duration `json:"retryMax" yaml:"retryMax"`
	// Undeliverable says whether a publish error is the message's own (it
	// is too large, the broker refuses it as invalid): such a row goes to
	// the dead letter table, with an error log. Default: none is; every
	// error is the broker's or the connection's, retried forever while
	// rows wait.
	Undeliverable func(error) bool `json:"-" yaml:"-"`
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.Lease <= 0 {
		c.Lease = 4 * time.Second
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = 100 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 10 * time.Second
	}
	if c.Undeliverable == nil {
		c.Undeliverable = func(error) bool { return false }
	}
	return c
}

func newRelay(db *sql.DB, q queries, pub message.Publisher, log *zap.Logger, cfg RelayConfig, now func() time.Time) *relay {
	return &relay{
		db: db, q: q, pub: pub, log: log, cfg: cfg.withDefaults(),
		owner:   uuid.NewString(),
		now:     now,
		renewed: map[string]time.Time{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// notify wakes the relay: a commit put rows in the outbox.
func (r *relay) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// start runs the relay until stopped.
func (r *relay) start() {
	go r.loop()
}

// close stops the relay after the batch in hand, within ctx.
func (r *relay) close(ctx context.Context) error {
	r.once.Do(func() { close(r.stop) })
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		n := r.inHand.Load()
		r.log.Warn("stop deadline passed with the relay still sending; the rows it has not deleted are sent again by the next relay",
			zap.Int64("rowsInHand", n))
		return fmt.Errorf("fxoutbox: relay still sending %d rows: %w", n, ctx.Err())
	}
}

func (r *relay) loop() {
	defer close(r.done)
	defer r.releaseLeases()
	backoff := r.cfg.RetryInitial
	for {
		sent, err := r.safePass()
		r.maybeCleanInbox()
		var wait time.Duration
		switch {
		case err != nil:
			r.logFailure(err, backoff)
			wait = backoff
			backoff = min(2*backoff, r.cfg.RetryMax)
		case sent > 0:
			backoff = r.cfg.RetryInitial
			continue // more may wait
		default:
			backoff = r.cfg.RetryInitial
			wait = r.cfg.PollInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-r.stop:
			t.Stop()
			return
		case <-r.wake:
			t.Stop()
			if err != nil {
				// The broker was down: a commit is no reason to hurry.
				select {
				case <-r.stop:
					return
				case <-time.After(wait):
				}
			}
		case <-t.C:
		}
	}
}

// brokerError is a publish the broker refused or could not take.
type brokerError struct{ err error }

func (e *brokerError) Error() string { return e.err.Error() }
func (e *brokerError) Unwrap() error { return e.err }

// logFailure says what stopped a pass: the broker, the database's
// connection, or the database itself (a missing table, a constraint),
// which no wait mends and which is logged at error level.
func (r *relay) logFailure(err error, retryIn time.Duration) {
	var be *brokerError
	switch {
	case errors.As(err, &be) && onlyBroker(err):
		r.log.Warn("relay: the broker is unavailable or refused; rows wait", zap.Error(err), zap.Duration("retryIn", retryIn))
	case r.db.PingContext(context.Background()) != nil:
		r.log.Warn("relay: the database is unreachable; rows wait", zap.Error(err), zap.Duration("retryIn", retryIn))
	default:
		r.log.Error("relay: the database refused a statement (not the broker, not the connection): check the schema (fxoutbox.Migrate) and the database's log; rows wait",
			zap.Error(err), zap.Duration("retryIn", retryIn))
	}
}

// onlyBroker reports whether every error joined in err is the broker's.
func onlyBroker(err error) bool {
	var be *brokerError
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			if !errors.As(e, &be) {
				return false
			}
		}
		return true
	}
	return errors.As(err, &be)
}

// inboxCleanEvery is how often, by the outbox's clock, a relay cleans the
// inbox.
const inboxCleanEvery = 10 * time.Minute

// maybeCleanInbox cleans the inbox when it is due.
func (r *relay) maybeCleanInbox() {
	now := r.now()
	if r.cleanInbox == nil || (!r.cleanedAt.IsZero() && now.Sub(r.cleanedAt) < inboxCleanEvery) {
		return
	}
	r.cleanedAt = now
	n, err := r.cleanInbox(context.Background())
	switch {
	case err != nil:
		r.log.Warn("relay: the inbox was not cleaned; it is tried again later", zap.Error(err))
	case n > 0:
		r.log.Debug("relay: inbox cleaned", zap.Int64("records", n))
	}
}

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
	topics, err := r.topics(ctx)
	if err != nil {
		return 0, err
	}
	sent := 0
	var errs []error
	for _, topic := range topics {
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
	return sent, errors.Join(errs...)
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
}

// send publishes a batch of topic's rows, in id order, and deletes each
// row the broker took. A row whose own message the broker refuses goes to
// the dead letter table; the rows after it go on.
func (r *relay) send(ctx context.Context, topic string) (int, error) {
	rows, err := r.rows(ctx, topic)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	r.inHand.Store(int64(len(rows)))
	defer r.inHand.Store(0)
	msgs := make([]*message.Message, len(rows))
	for i, rw := range rows {
		msg := message.NewMessage(rw.msgID, rw.payload)
		if err := json.Unmarshal([]byte(rw.metadata), &msg.Metadata); err != nil {
			return 0, r.deadLetter(ctx, topic, rw, fmt.Errorf("metadata: %w", err))
		}
		msgs[i] = msg
	}
	acked, err := r.publish(topic, msgs)
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
	rs, err := r.db.QueryContext(ctx, r.q.rows, topic, r.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var rw row
		if err := rs.Scan(&rw.id, &rw.msgID, &rw.payload, &rw.metadata); err != nil {
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
	if _, err := tx.ExecContext(ctx, r.q.dead, rw.id, topic, rw.msgID, rw.payload, rw.metadata, cause.Error()); err != nil {
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
