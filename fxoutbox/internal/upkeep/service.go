// Package upkeep is the outbox's background work beside the relay's
// sending, after River's internal/maintenance: one service per file, each
// a loop of its own with its own configuration, built whole by its
// constructor and started and stopped by the outbox. The
// SchedulePromoter moves due schedules into the outbox; the InboxCleaner
// deletes the inbox's old records.
package upkeep

import (
	"context"
	"database/sql"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"
)

// service is a loop's start and stop: it runs once, not after close, and
// close waits for the round in hand, within ctx.
type service struct {
	name string // for the stop's error

	stop    chan struct{}
	done    chan struct{}
	stopped context.Context // ends with stop: a wait for the connection budget ends with it
	cancel  context.CancelFunc

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool
}

func newService(name string) service {
	stopped, cancel := context.WithCancel(context.Background())
	return service{name: name, stop: make(chan struct{}), done: make(chan struct{}), stopped: stopped, cancel: cancel}
}

// Acquire takes a place in the outbox's connection budget
// (fxoutbox.Config.MaxConnections), waiting on ctx; the function it
// returns gives it back. Nil: no budget.
type Acquire func(ctx context.Context) (func(), error)

// take takes a place of acquire, if any, for a round: the service's
// stop ends the wait.
func (s *service) take(acquire Acquire) (func(), error) {
	if acquire == nil {
		return func() {}, nil
	}
	return acquire(s.stopped)
}

// stopping reports whether the service is asked to stop.
func (s *service) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// start runs loop on a goroutine of its own, once, and not after close;
// loop returns when stop is closed.
func (s *service) start(loop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return
	}
	s.started = true
	go func() {
		defer close(s.done)
		loop()
	}()
}

// close stops the loop after the round in hand, within ctx. A service
// never started returns at once.
func (s *service) close(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	if !s.closed {
		s.closed = true
		close(s.stop)
		s.cancel()
	}
	s.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fxoutbox: %s still running: %w", s.name, ctx.Err())
	}
}

// safely runs round with its panic turned into an error: a service runs
// on a goroutine of its own, where a panic would take the process down.
func safely(log *zap.Logger, name string, round func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			log.Error("upkeep: "+name+" panicked; it is tried again", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("fxoutbox: %s panicked: %v", name, v)
		}
	}()
	return round()
}

// pingTimeout bounds the ping that tells a database down from one that
// refused a statement.
const pingTimeout = 5 * time.Second

// logFailure says what stopped a round: the database's connection, or
// the database itself (a missing table, a constraint), which no wait
// mends and which is logged at error level.
func logFailure(log *zap.Logger, db *sql.DB, what string, err error, retryIn time.Duration) {
	// Bounded: a database that hangs must not hold the service here.
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if db.PingContext(ctx) != nil {
		log.Warn("upkeep: the database is unreachable; "+what, zap.Error(err), zap.Duration("retryIn", retryIn))
		return
	}
	log.Error("upkeep: the database refused a statement: check the schema (fxoutbox.Migrate) and the database's log; "+what,
		zap.Error(err), zap.Duration("retryIn", retryIn))
}
