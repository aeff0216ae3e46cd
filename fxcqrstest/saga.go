package fxcqrstest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// Sagas runs sagas the way a service does, on a clock of the test's, with
// faults injected per step: an act or a compensation that fails N times,
// and a crash at a step boundary, after which the runner is dropped and a
// new one recovers the saga from the store, as a restarted process would.
// Make one with NewSagas.
type Sagas struct {
	// Clock is the runners' clock (and the outbox's, on SQL).
	Clock *outboxtest.Clock
	// Store is where the sagas are: a Memory store, or the SQL store of
	// SagasOn's database.
	Store fxsaga.Store

	t      testing.TB
	db     *sql.DB
	d      fxoutbox.Dialect
	mu     sync.Mutex
	cancel context.CancelFunc // the current runner's: a crash cancels it
}

// SagasOption configures NewSagas.
type SagasOption func(*Sagas)

// SagasOn runs the sagas on db (its outbox and saga tables migrated: see
// outboxtest.Open and fxsaga.Migrate), each step in the outbox's unit of
// work, as under fxoutbox.Module. Default: a Memory store, no unit of
// work.
func SagasOn(db *sql.DB, d fxoutbox.Dialect) SagasOption {
	return func(s *Sagas) { s.db, s.d = db, d }
}

// NewSagas returns a Sagas on a fake clock that starts at 2026-01-01.
func NewSagas(t testing.TB, opts ...SagasOption) *Sagas {
	t.Helper()
	s := &Sagas{t: t, Clock: outboxtest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	for _, opt := range opts {
		opt(s)
	}
	if s.db == nil {
		s.Store = fxsaga.NewMemory()
		return s
	}
	// A lease shorter than anything: the runner that recovers after a
	// crash claims at once what the dropped one left.
	store, err := fxsaga.NewSQL(s.db, s.d, fxsaga.Tables{}, time.Nanosecond)
	must(t, err)
	s.Store = store
	return s
}

// binder is a saga handler to bind to the runner it works for
// (fxsaga.DeadlineHandler, fxsaga.Resumer).
type binder interface{ Bind(r *fxsaga.Runner) }

// runner makes a runner of its own, as a new process would, with the
// event handlers given (Resumers), each bound to it. On SQL its steps run
// in the outbox's unit of work, and a saga that waits schedules its
// Deadline there, as under fxsaga.Module; nothing delivers the deadline
// (there is no relay): Recover times out what is overdue by the clock.
func (s *Sagas) runner(events ...binder) (*fxsaga.Runner, *fxcqrs.Mediator) {
	s.t.Helper()
	deadlines := fxsaga.NewDeadlineHandler()
	handlers := make([]any, len(events))
	for i, e := range events {
		handlers[i] = e
	}
	opts := []fxcqrs.Option{fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}, deadlines), fxcqrs.WithEventHandlers(handlers...)}
	if s.db != nil {
		bus, err := fxbus.New(fxbus.Config{}, nil, nil)
		must(s.t, err)
		o, err := fxoutbox.New(s.db, bus, fxoutbox.Config{
			Dialect: s.d, Now: s.Clock.Now, After: s.Clock.After,
			Deliverables: []fxoutbox.Deliverable{fxoutbox.ScheduledCommand[fxsaga.Deadline]()},
		}, nil)
		must(s.t, err)
		opts = append(opts, fxcqrs.WithMiddleware(o.UnitOfWork()), fxcqrs.WithForwarder(o.Forwarder()))
	}
	m, err := fxcqrs.New(fxcqrs.Config{}, opts...)
	must(s.t, err)
	s.t.Cleanup(func() { _ = m.Stop(context.Background()) })
	r := fxsaga.NewRunner(m, s.Store, fxsaga.RunnerConfig{CompensationAttempts: 3, CompensationBackoff: time.Microsecond, Now: s.Clock.Now}, nil)
	deadlines.Bind(r)
	for _, e := range events {
		e.Bind(r)
	}
	return r, m
}

// Deliver delivers event e to the sagas of def that wait for it (see
// fxsaga.Await), on a runner of its own, as the process that receives e
// from a subscription would: the saga waiting with e's correlation
// resumes and goes on, within Deliver, to its next wait or its end. An
// event no saga waits for is no error (fxsaga.Resumer ignores it). To
// time a wait out instead, move s.Clock past its deadline and Recover.
func Deliver[C, E any](ctx context.Context, s *Sagas, def *fxsaga.Saga[C], e E) error {
	s.t.Helper()
	resumer := fxsaga.NewResumer[E]()
	r, m := s.runner(resumer)
	if err := r.Add(def); err != nil {
		return err
	}
	ctx, cancel := s.begin(ctx)
	defer cancel()
	err := fxcqrs.Publish(ctx, m, e)
	if ctx.Err() != nil {
		return ErrCrashed
	}
	return err
}

// ErrCrashed is the error of a Run that a Faults.Crash* stopped: the
// runner is gone; Recover goes on with a new one.
var ErrCrashed = errors.New("fxcqrstest: the process crashed (a fault injected)")

// Run runs a new saga of def over c on a runner of its own. It returns
// the saga's id and how Run ended: ErrCrashed if a fault crashed it, or
// Run's own outcome (nil, *fxsaga.Error, *fxsaga.Pending).
func Run[C any](ctx context.Context, s *Sagas, def *fxsaga.Saga[C], c C) (string, error) {
	s.t.Helper()
	r, _ := s.runner()
	ctx, cancel := s.begin(ctx)
	defer cancel()
	var id string
	var err error
	for p, perr := range fxsaga.Stream(ctx, r, def, c) {
		if id == "" && p.SagaID != "" {
			id = p.SagaID
		}
		if perr != nil {
			err = perr
		}
	}
	if ctx.Err() != nil {
		return s.idOf(ctx, id, def.Name()), ErrCrashed
	}
	var pending *fxsaga.Pending
	var sagaErr *fxsaga.Error
	switch {
	case errors.As(err, &pending):
		id = pending.SagaID
	case errors.As(err, &sagaErr):
		id = sagaErr.SagaID
	}
	return s.idOf(ctx, id, def.Name()), err
}

// idOf is id, or, when the saga crashed before it reported anything, the
// one unfinished saga of name.
func (s *Sagas) idOf(_ context.Context, id, name string) string {
	if id != "" {
		return id
	}
	r, ok := s.Store.(fxsaga.Reader)
	if !ok {
		return ""
	}
	left, err := r.Unfinished(context.Background(), name)
	if err != nil || len(left) != 1 {
		return ""
	}
	return left[0].ID
}

// Recover recovers the sagas of def on a new runner, as a restarted
// process does, and returns recovery's error (see fxsaga.Recover).
func Recover[C any](ctx context.Context, s *Sagas, def *fxsaga.Saga[C]) error {
	r, _ := s.runner()
	ctx, cancel := s.begin(ctx)
	defer cancel()
	err := fxsaga.Recover(ctx, r, def)
	if ctx.Err() != nil {
		return ErrCrashed
	}
	return err
}

// begin makes ctx the current runner's, which a crash cancels.
func (s *Sagas) begin(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
	return ctx, cancel
}

// crash stops the current runner where it is.
func (s *Sagas) crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
}

// State returns saga id's state.
func (s *Sagas) State(id string) fxsaga.State {
	s.t.Helper()
	st, err := s.Store.(fxsaga.Reader).Load(context.Background(), id)
	must(s.t, err)
	return st
}

// Log returns saga id's step log as "act 0", "compensate 1", … with the
// failures as "act 2: refused"; operators' marks included.
func (s *Sagas) Log(id string) []string {
	s.t.Helper()
	var entries []fxsaga.Entry
	switch st := s.Store.(type) {
	case *fxsaga.Memory:
		entries = st.Entries(id)
	case *fxsaga.SQL:
		var err error
		entries, err = st.Entries(context.Background(), id)
		must(s.t, err)
	}
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = fmt.Sprintf("%s %d", e.Action, e.Step)
		if e.Err != "" {
			out[i] += ": " + e.Err
		}
	}
	return out
}

// Faults are what a Faulty step does wrong.
type Faults struct {
	// FailAct and FailCompensate fail the act, or the compensation, that
	// many times before they work (-1: always).
	FailAct, FailCompensate int
	// CrashBeforeAct crashes the process as the act begins: the act's
	// transaction never commits, and recovery acts again. CrashAfterAct
	// crashes it once the act has committed, before the next step.
	// CrashBeforeCompensate likewise, as the compensation begins. Each
	// crashes once.
	CrashBeforeAct, CrashAfterAct, CrashBeforeCompensate bool
}

// Faulty returns step with faults, which s injects.
func Faulty[C any](s *Sagas, step fxsaga.Step[C], f Faults) fxsaga.Step[C] {
	return &faulty[C]{s: s, step: step, f: f}
}

type faulty[C any] struct {
	s    *Sagas
	step fxsaga.Step[C]
	mu   sync.Mutex
	f    Faults
}

// Name keeps the step's own name.
func (f *faulty[C]) Name() string {
	if n, ok := f.step.(interface{ Name() string }); ok {
		return n.Name()
	}
	return fmt.Sprintf("%T", f.step)
}

func (f *faulty[C]) Act(ctx context.Context, c *C) error {
	f.mu.Lock()
	crashBefore, crashAfter := f.f.CrashBeforeAct, f.f.CrashAfterAct
	f.f.CrashBeforeAct, f.f.CrashAfterAct = false, false
	fail := f.f.FailAct != 0
	if f.f.FailAct > 0 {
		f.f.FailAct--
	}
	f.mu.Unlock()
	if crashBefore {
		f.s.crash()
		return ErrCrashed
	}
	if fail {
		return errors.New("act refused (a fault injected)")
	}
	if err := f.step.Act(ctx, c); err != nil {
		return err
	}
	if crashAfter {
		if fxoutbox.Tx(ctx) != nil {
			return fxoutbox.AfterCommit(ctx, func(context.Context) { f.s.crash() })
		}
		f.s.crash() // no transaction: the act is done
	}
	return nil
}

func (f *faulty[C]) Compensate(ctx context.Context, c *C) error {
	f.mu.Lock()
	crash := f.f.CrashBeforeCompensate
	f.f.CrashBeforeCompensate = false
	fail := f.f.FailCompensate != 0
	if f.f.FailCompensate > 0 {
		f.f.FailCompensate--
	}
	f.mu.Unlock()
	if crash {
		f.s.crash()
		return ErrCrashed
	}
	if fail {
		return errors.New("compensation refused (a fault injected)")
	}
	return f.step.Compensate(ctx, c)
}
