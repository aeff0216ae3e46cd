package relay

import (
	"context"
	"errors"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// sendLocal delivers the delivery topic's rows to the mediator,
// Concurrency at a time, and deletes the delivered ones in one statement
// fenced by the lease. While they are delivered, the rows that this
// process's commits announce are read (those after the last it read) and
// started as places free up, so that a row committed during a slow
// delivery does not wait for the whole batch; up to batchesPerTurn
// batches' worth of rows per call. A row whose delivery failed waits for
// its next attempt with a backoff, or goes to the dead letter table after
// MaxAttempts (at once when it is malformed); one the mediator refused
// because it is stopping waits for the next relay.
func (s *sender) sendLocal(ctx context.Context, topic string, rows []row) (int, error) {
	type result struct {
		rw  row
		err error
	}
	var (
		results = make(chan result, s.delivery.Concurrency)
		pending = rows
		last    = rows[len(rows)-1].id
		read    = len(rows)
		budget  = s.cfg.BatchSize * batchesPerTurn
		running int
		stop    = s.stop
		woken   bool // a wake was taken here: the loop must see it too
		done    []row
		failed  []error
		hang    error // a step its deadline ended: the store hangs, none of its statements runs more
	)
	for len(pending) > 0 || running > 0 {
		for len(pending) > 0 && running < s.delivery.Concurrency {
			rw := pending[0]
			pending = pending[1:]
			running++
			go func() { results <- result{rw, s.deliverSafely(ctx, rw)} }()
		}
		more := s.wake
		if read >= budget {
			more = nil // enough for one call: the next pass reads the rest
		}
		select {
		case res := <-results:
			running--
			switch {
			case res.err == nil:
				done = append(done, res.rw)
			case errors.Is(res.err, fxcqrs.ErrStopped):
				failed = append(failed, res.err) // not an attempt: the next relay delivers it
			case hang != nil:
				// Its next attempt is not recorded: it is delivered
				// again, as a first try, once the store answers.
			default:
				if err := s.failLocal(ctx, topic, res.rw, res.err); timedOut(err) {
					hang, read = err, budget
				} else if err != nil {
					failed = append(failed, err)
				}
			}
		case <-more:
			woken = true
			var ok bool
			err := s.inStep(ctx, func(ctx context.Context) (err error) {
				ok, err = s.leases.Take(ctx, topic)
				return err
			})
			if timedOut(err) {
				hang, read = err, budget
				continue
			}
			if err != nil || !ok {
				read = budget // the lease is in doubt: finish what runs, read no more
				continue
			}
			var next []row
			err = s.inStep(ctx, func(ctx context.Context) (err error) {
				next, err = s.rowsAfter(ctx, schema.Lane{Topic: topic}, last)
				return err
			})
			if timedOut(err) {
				hang, read = err, budget
				continue
			}
			if err != nil {
				failed = append(failed, err)
				read = budget
				continue
			}
			if len(next) > 0 {
				last = next[len(next)-1].id
				read += len(next)
				s.inHand.Add(int64(len(next)))
				pending = append(pending, next...)
			}
		case <-stop:
			read, stop = budget, nil // stopping: finish what runs, read no more
		}
	}
	if woken {
		wakeUp(s.wake) // the commits it announced may have written other topics' rows too
	}
	// Handlers take longer than a broker's acknowledgement: the batch may
	// have outlasted the lease it was read under. Renew it now if a
	// quarter of it has passed (or take it back if it lapsed and nobody
	// took it), so that the fenced delete deletes what was delivered
	// instead of sending it all again.
	//
	// A store that hangs gives up the rest of its turn here: the rows
	// delivered are delivered again once it answers (at least once, as
	// after a crash).
	if hang != nil {
		return 0, errors.Join(append(failed, hang)...)
	}
	if err := s.inStep(ctx, func(ctx context.Context) error {
		_, err := s.leases.Take(ctx, topic)
		return err
	}); timedOut(err) {
		return 0, errors.Join(append(failed, err)...)
	} else if err != nil {
		failed = append(failed, err)
	}
	var sent int
	err := s.inStep(ctx, func(ctx context.Context) (err error) {
		sent, err = s.deleteSent(ctx, topic, done)
		return err
	})
	return sent, errors.Join(append(failed, err)...)
}

// deliverSafely is deliver with a panic of ours turned into an error (a
// handler's own panic is the mediator's *PanicError already).
func (s *sender) deliverSafely(ctx context.Context, rw row) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PermanentError{Err: errors.New("delivery panicked")}
			s.log.Error("relay: a delivery panicked", zap.Any("panic", v), zap.String("messageId", rw.msgID))
		}
	}()
	return s.local.Deliver(ctx, rw.msgID, rw.payload, rw.metadata)
}

// failLocal schedules a failed row's next attempt, or dead-letters it.
func (s *sender) failLocal(ctx context.Context, topic string, rw row, cause error) error {
	if errors.As(cause, new(*ExpiredError)) {
		return s.expire(ctx, topic, rw, cause)
	}
	var bad *PermanentError
	failed := rw.attempts + 1
	if errors.As(cause, &bad) || failed >= s.delivery.MaxAttempts {
		return s.deadLetter(ctx, topic, rw, cause)
	}
	wait := retryAfter(s.delivery, failed)
	s.log.Warn("relay: a durable delivery failed; it is tried again",
		zap.String("messageId", rw.msgID), zap.Int("attempt", failed), zap.Duration("retryIn", wait), zap.Error(cause))
	err := s.inStep(ctx, func(ctx context.Context) error {
		_, err := s.db.ExecContext(ctx, s.q.Retry, s.now().Add(wait).UnixNano(), rw.id)
		return err
	})
	s.inHand.Add(-1)
	return err
}

// expire moves a row delivered after its deliver-by time to the dead
// letter table, with the expiry as its reason, counted among the dead
// letters and apart as expired, and logged at info level: its producer
// asked for it, as a subscription's expired message.
func (s *sender) expire(ctx context.Context, topic string, rw row, cause error) error {
	if err := s.inStep(ctx, func(ctx context.Context) error { return s.bury(ctx, topic, rw, cause) }); err != nil {
		return err
	}
	s.expired.Add(1)
	s.log.Info("relay: message expired: dead-lettered undelivered",
		zap.String("topic", topic), zap.String("messageId", rw.msgID), zap.Int64("row", rw.id), zap.String("reason", cause.Error()))
	return nil
}

// ExpiredError is a row delivered after its deliver-by time
// (fxbus.MetadataDeliverBy; see fxbus.Bus.CheckExpiry): the relay moves
// it to the dead letter table at once, with Err's "expired: …" as the
// reason, never retries it, and counts it in Stats.Expired.
type ExpiredError struct{ Err error }

func (e *ExpiredError) Error() string { return e.Err.Error() }
func (e *ExpiredError) Unwrap() error { return e.Err }

// PermanentError is a row that cannot be delivered however often it is
// tried (it does not decode, no handler is registered for its name, its
// delivery panicked): the relay dead-letters it at once instead of
// retrying it. Its text keeps the "malformed: " that the dead letters
// have always recorded.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "malformed: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }
