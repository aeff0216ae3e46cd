package fxsaga

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/internal/deadline"
	"go.uber.org/zap"
)

// The module's recovery loop: a background service that recovers the
// registered sagas at start and then every RecoveryInterval (Recover does
// the work), and what it did last, for its health check. Module wires it.

// recoveryLoop recovers its sagas one after another, a pass over all of
// them at start and then every interval, until stop.
type recoveryLoop struct {
	runner   *Runner
	sagas    []Definition // in the order of their names
	interval time.Duration
	schema   schemaChecker // nil when the store has no schema to check
	log      *zap.Logger
	health   *recovery

	ctx    context.Context // the loop's: stop cancels it
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has returned
}

// schemaChecker is a store that can check its schema at start (SQL: one
// read of its migrations table).
type schemaChecker interface {
	CheckSchema(ctx context.Context) error
}

func newRecoveryLoop(r *Runner, store Store, sagas []Definition, interval time.Duration, log *zap.Logger, health *recovery) *recoveryLoop {
	if log == nil {
		log = zap.NewNop()
	}
	checker, _ := store.(schemaChecker)
	ctx, cancel := context.WithCancel(context.Background())
	return &recoveryLoop{
		runner: r, sagas: sagas, interval: interval, schema: checker, log: log.Named("fxsaga"), health: health,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
}

// start checks the store's schema, then starts the loop on a goroutine of
// its own.
func (l *recoveryLoop) start(ctx context.Context) error {
	if l.schema != nil {
		if err := l.schema.CheckSchema(ctx); err != nil {
			return err
		}
	}
	if err := l.checkContexts(ctx); err != nil {
		return err
	}
	l.health.began()
	go l.run()
	return nil
}

func (l *recoveryLoop) run() {
	defer close(l.done)
	for {
		l.pass()
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(l.interval):
		}
	}
}

// pass recovers each saga once, logging what failed: the next pass tries
// again.
func (l *recoveryLoop) pass() {
	for _, s := range l.sagas {
		switch err := recoverSafely(l.ctx, s, l.runner); {
		case err == nil, errors.Is(err, context.Canceled):
		case errors.Is(err, ErrFenced):
			// Another replica took a saga over: it drives it now.
			l.log.Info("saga recovery: a saga was taken over", zap.String("saga", s.Name()), zap.Error(err))
		default:
			l.log.Error("saga recovery", zap.String("saga", s.Name()), zap.Error(err))
		}
	}
	l.health.pass()
}

// stop ends the loop and waits for the saga in hand, within a third of
// ctx's deadline: the mediator and the relay stop after it and need
// theirs. A saga left behind is consistent for the next recovery.
func (l *recoveryLoop) stop(ctx context.Context) error {
	ctx, cancelShare := deadline.Share(ctx, 1.0/3)
	defer cancelShare()
	l.cancel()
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fxsaga: recovery still running: %w", ctx.Err())
	}
}

// recoverSafely recovers s, a panic included: recovery runs on a goroutine
// of its own, where a panic would take the process down, at every restart.
func recoverSafely(ctx context.Context, s Definition, r *Runner) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("fxsaga: recovering saga %s panicked: %v\n%s", s.Name(), v, debug.Stack())
		}
	}()
	return s.recoverWith(ctx, r)
}

// recovery is what the recovery loop did last, for its health check.
type recovery struct {
	mu       sync.Mutex
	now      func() time.Time
	interval time.Duration
	started  time.Time // when the loop began, zero before
	passed   time.Time // when it last finished a pass over every saga
}

func (rc *recovery) began() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.started = rc.now()
}

func (rc *recovery) pass() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.passed = rc.now()
}

// check is fxsaga.recovery, readiness: recovery finished a pass within
// three of its intervals (a pass stuck on a saga, or a store that does
// not answer, fails it). In-memory: it costs a lock.
func (rc *recovery) check() fxcqrs.Check {
	return fxcqrs.Check{Name: "fxsaga.recovery", Readiness: true, Run: func(context.Context) error {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		last := rc.passed
		if last.IsZero() {
			last = rc.started
		}
		if last.IsZero() {
			return nil // not started: the application's start reports that
		}
		if since := rc.now().Sub(last); since > 3*rc.interval {
			return fmt.Errorf("saga recovery has not finished a pass for %v (RecoveryInterval %v)", since, rc.interval)
		}
		return nil
	}}
}
