package fxsaga

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxcqrs/fxcqrs"
	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

// Runner runs sagas on a mediator and a store.
type Runner struct {
	m      *fxcqrs.Mediator
	store  Store
	cfg    RunnerConfig
	logger *zap.Logger
	now    func() time.Time

	mu      sync.Mutex
	driving map[string]int                // the sagas this runner drives now, and by how many
	defs    map[string]Definition         // Add's, by name
	waits   map[reflect.Type][]Definition // the definitions that wait for each event type

	unmatched                                                         atomic.Int64
	recovered, resumed, timedOut, compensations, compFailures, failed atomic.Uint64
}

// RunnerStats counts what a runner did since it was made, for metrics.
type RunnerStats struct {
	// Recovered is the sagas recovery drove on (claimed after their
	// owner stopped or crashed).
	Recovered uint64
	// Resumed is the waiting sagas an event resumed.
	Resumed uint64
	// TimedOut is the waiting sagas whose deadline came first.
	TimedOut uint64
	// Compensations is the compensations that committed.
	Compensations uint64
	// CompensationFailures is the attempts at a compensation that failed
	// (each retried, up to CompensationAttempts).
	CompensationFailures uint64
	// Failed is the sagas left Failed: a compensation kept failing.
	Failed uint64
	// Unmatched is the events that resumed no saga (see Unmatched).
	Unmatched int64
}

// Stats returns the runner's counters.
func (r *Runner) Stats() RunnerStats {
	return RunnerStats{
		Recovered: r.recovered.Load(), Resumed: r.resumed.Load(), TimedOut: r.timedOut.Load(),
		Compensations: r.compensations.Load(), CompensationFailures: r.compFailures.Load(), Failed: r.failed.Load(),
		Unmatched: r.unmatched.Load(),
	}
}

// acquire marks saga id as driven by this runner, unless it already is:
// recovery must not take over a saga that a Run of the same process is
// driving (its store may well let it claim it).
func (r *Runner) acquire(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.driving[id] > 0 {
		return false
	}
	r.driving[id]++
	return true
}

// hold marks saga id as driven by this runner, even if it already is: a
// saga that resumed, whose version the resume took, while the Run that
// left it waiting returns.
func (r *Runner) hold(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.driving[id]++
}

func (r *Runner) release(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.driving[id]--; r.driving[id] <= 0 {
		delete(r.driving, id)
	}
}

// RunnerConfig configures a Runner. Every field is optional.
type RunnerConfig struct {
	// CompensationAttempts is how many times a compensation is tried before
	// the saga is left Failed. Default 5.
	CompensationAttempts int `json:"compensationAttempts" yaml:"compensationAttempts"`
	// CompensationBackoff is the first wait between tries; it doubles.
	// Default 100ms.
	CompensationBackoff time.Duration `json:"compensationBackoff" yaml:"compensationBackoff"`
	// Observer sees each saga driven (run, or resumed by recovery) as a
	// call of KindCommand whose Message is an Activity and whose
	// MessageType is "saga order". Each act and compensation is a call of
	// the mediator, which its own observer sees, named "saga order:
	// ChargeCard act" (see fxcqrs.Call.MessageType), under its saga's
	// call when the two observers are one. The otel module's observer
	// makes a span of each and records their outcomes and durations.
	// Module sets it to the mediator's observer (fxcqrs.Observer in the
	// graph) when left nil.
	Observer fxcqrs.Observer `json:"-" yaml:"-"`
	// Now is the runner's clock: a waiting saga's deadline is its now plus
	// Wait.Within, and recovery times out the sagas whose deadline is
	// before it. Give the outbox the same clock (fxoutbox.Config.Now),
	// which delivers the deadlines. Default time.Now.
	Now func() time.Time `json:"-" yaml:"-"`
}

// Activity is a saga, or one of its steps' act or compensation: the
// Message of the saga's call that RunnerConfig.Observer sees, and what a
// step's call carries (its Message has a method SagaActivity() Activity).
type Activity struct {
	Saga   string // the saga's name
	ID     string // the saga's ID
	Step   string // the step's name; "" for the saga itself
	Action string // "act" or "compensate"; "" for the saga itself
}

// name is what logs and spans call the activity.
func (a Activity) name() string {
	if a.Step == "" {
		return "saga " + a.Saga
	}
	return "saga " + a.Saga + ": " + a.Step + " " + a.Action
}

// observe reports a saga to the observer, if any, as a call; the function
// it returns reports its end.
func (r *Runner) observe(ctx context.Context, a Activity) (context.Context, func(error)) {
	obs := r.cfg.Observer
	if obs == nil {
		return ctx, func(error) {}
	}
	call := fxcqrs.Call{Kind: fxcqrs.KindCommand, Message: a, MessageType: a.name()}
	start := time.Now()
	ctx = obs.CallStarted(ctx, fxcqrs.CallStarted{Call: call})
	return ctx, func(err error) {
		obs.CallFinished(ctx, fxcqrs.CallFinished{Call: call, Err: err, Elapsed: time.Since(start)})
	}
}

// NewRunner returns a runner whose steps run as calls of m (which must have
// StepHandler registered) and whose sagas persist in store. It logs to
// logger (nil: nowhere) each saga left Failed, at error level.
func NewRunner(m *fxcqrs.Mediator, store Store, cfg RunnerConfig, logger *zap.Logger) *Runner {
	if logger == nil {
		logger = zap.NewNop()
	}
	if cfg.CompensationAttempts <= 0 {
		cfg.CompensationAttempts = 5
	}
	if cfg.CompensationBackoff <= 0 {
		cfg.CompensationBackoff = 100 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Runner{
		m: m, store: store, cfg: cfg, logger: logger, now: cfg.Now,
		driving: map[string]int{}, defs: map[string]Definition{}, waits: map[reflect.Type][]Definition{},
	}
}

// Definition is a saga's definition, whatever its context: *Saga[C]
// implements it, and nothing else does.
type Definition interface {
	// Name returns the saga's name.
	Name() string
	definitionError() error
	recoverWith(ctx context.Context, r *Runner) error
	awaited() []reflect.Type
	resumeWith(ctx context.Context, r *Runner, t reflect.Type, e any) (int, error)
	expireWith(ctx context.Context, r *Runner, st State) error
}

// Add makes r resume and time out the waiting sagas of each definition
// (see Await): the events and deadlines that reach r find their
// definitions here. Module adds the sagas registered with Register;
// without fx, Add each saga that waits before its events can arrive (Run
// and Recover add the one they are given, but a restarted process may
// receive an event before either ran). A definition that cannot run, or
// a second one of a name, is an error.
func (r *Runner) Add(sagas ...Definition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, s := range sagas {
		if err := s.definitionError(); err != nil {
			errs = append(errs, err)
			continue
		}
		if old, ok := r.defs[s.Name()]; ok {
			if old != s {
				errs = append(errs, fmt.Errorf("fxsaga: two sagas are named %q", s.Name()))
			}
			continue
		}
		r.defs[s.Name()] = s
		for _, t := range s.awaited() {
			r.waits[t] = append(r.waits[t], s)
		}
	}
	return errors.Join(errs...)
}

// track makes s the definition of its name that r resumes and times out,
// in place of an earlier one: Run and Recover track the definition they
// are given, so that without fx a saga's events find it.
func (r *Runner) track(s Definition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.defs[s.Name()]; ok {
		if old == s {
			return
		}
		for t, defs := range r.waits {
			r.waits[t] = slices.DeleteFunc(slices.Clone(defs), func(d Definition) bool { return d == old })
		}
	}
	r.defs[s.Name()] = s
	for _, t := range s.awaited() {
		r.waits[t] = append(r.waits[t], s)
	}
}

// Store returns the store r keeps its sagas in: Load one by the id of
// its Pending or Error.
func (r *Runner) Store() Store { return r.store }

// Unmatched counts the events that reached a Resumer and resumed no saga:
// late (the deadline won), duplicates under another id, or another saga's.
func (r *Runner) Unmatched() int64 { return r.unmatched.Load() }

func (r *Runner) definition(name string) Definition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.defs[name]
}

// Run runs a new saga of s over c: its steps in order, each persisted with
// the saga's state as it completes. When a step fails, the completed steps
// are compensated in reverse, and Run returns an *Error saying which step
// failed and what compensation did. When it reaches a step that waits
// (Await), it returns once the saga waits, with a *Pending that says for
// what and until when: the event or the deadline goes on with it later,
// on any replica. It returns the context as it is then.
func Run[C any](ctx context.Context, r *Runner, s *Saga[C], c C) (C, error) {
	st, err := start(ctx, r, s, c)
	if err != nil {
		return c, err
	}
	defer r.release(st.ID)
	return drive(ctx, r, s, st, nil)
}

// start creates a new saga of s over c, driven by r: the caller releases
// it when done.
func start[C any](ctx context.Context, r *Runner, s *Saga[C], c C) (State, error) {
	if s.err != nil {
		return State{}, s.err
	}
	if err := outside(ctx, s.name); err != nil {
		return State{}, err
	}
	data, err := roundTrip(c)
	if err != nil {
		return State{}, fmt.Errorf("fxsaga: saga %s: context: %w", s.name, err)
	}
	r.track(s)
	shape, err := json.Marshal(s.Shape())
	if err != nil {
		return State{}, fmt.Errorf("fxsaga: saga %s: its shape: %w", s.name, err)
	}
	st := State{ID: uuid.NewString(), Name: s.name, Status: Running, Context: data, Version: 1, Shape: shape}
	r.acquire(st.ID)
	if err := r.store.Create(ctx, st); err != nil {
		r.release(st.ID)
		return State{}, err
	}
	return st, nil
}

// roundTrip encodes c as the store keeps it, and checks that it reads back
// as it was: a context that cannot (an interface-typed field, say) would
// leave the saga unrecoverable after its first step.
func roundTrip[C any](c C) ([]byte, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var back C
	if err := json.Unmarshal(data, &back); err != nil {
		return nil, fmt.Errorf("it does not read back from JSON, so the saga could not be recovered: %w", err)
	}
	if again, err := json.Marshal(back); err != nil || !bytes.Equal(again, data) {
		return nil, fmt.Errorf("it does not read back from JSON as it was (%s, then %s), so the saga could not be recovered", data, again)
	}
	return data, nil
}

// ErrInTransaction is the error of Run, Stream and Recover called inside a
// unit of work's transaction (from a command handler under the outbox
// module, say): the steps would join that one transaction instead of
// committing one by one, and a failed step's writes would not roll back
// on their own. Run sagas from outside: an HTTP handler, a request
// handler, a worker.
var ErrInTransaction = errors.New("fxsaga: a saga cannot run inside a unit of work's transaction")

func outside(ctx context.Context, name string) error {
	if fxoutbox.Tx(ctx) != nil {
		return fmt.Errorf("%w (saga %s): run it from outside, such as an HTTP handler or a worker", ErrInTransaction, name)
	}
	return nil
}

// Progress is one step of a saga done: an act or a compensation that
// committed, with the context after it.
type Progress[C any] struct {
	SagaID  string // the saga's ID, as its State has it
	Step    string // the step's name
	Action  string // "act" or "compensate"
	Context C      // the saga's context once the step committed
}

// Stream runs a new saga as Run does and yields its progress step by step
// (a server-sent events endpoint can show it), then, when it did not
// complete, a final (zero, *Error), or (zero, *Pending) when it waits. A consumer that stops early does not
// stop the saga: it runs to its end, or stays consistent for recovery.
func Stream[C any](ctx context.Context, r *Runner, s *Saga[C], c C) iter.Seq2[Progress[C], error] {
	return func(yield func(Progress[C], error) bool) {
		more := true
		report := func(p Progress[C]) {
			if more {
				more = yield(p, nil)
			}
		}
		st, err := start(ctx, r, s, c)
		if err == nil {
			defer r.release(st.ID)
			_, err = drive(ctx, r, s, st, report)
		}
		if err != nil && more {
			yield(Progress[C]{}, err)
		}
	}
}

// drive takes a saga from its state to a final one, or sets it aside when
// its state does not fit the definition.
func drive[C any](ctx context.Context, r *Runner, s *Saga[C], st State, report func(Progress[C])) (c C, err error) {
	ctx, finish := r.observe(ctx, Activity{Saga: s.name, ID: st.ID})
	defer func() { finish(err) }()
	if reason := s.misfit(st); reason != "" {
		return c, r.setAside(ctx, st, reason)
	}
	return driveSteps(ctx, r, s, st, report)
}

func driveSteps[C any](ctx context.Context, r *Runner, s *Saga[C], st State, report func(Progress[C])) (C, error) {
	var c C
	if err := json.Unmarshal(st.Context, &c); err != nil {
		return c, fmt.Errorf("fxsaga: saga %s: context: %w", st.ID, err)
	}
	var failed error
	for st.Status == Running && st.Step < len(s.steps) {
		if err := ctx.Err(); err != nil {
			return c, err // stopping: left Running, consistent, for recovery
		}
		i := st.Step
		w, waits := s.waits[i]
		timedOut := waits && slices.Contains(st.TimedOut, i)
		action, act := "act", s.steps[i].Act
		if timedOut {
			action, act = "timeout", w.timeoutStep().Act
		}
		next := c
		saved, err := r.step(ctx, st, i, s.names[i], action, func(ctx context.Context) (State, error) {
			if err := act(ctx, &next); err != nil {
				return st, err
			}
			data, err := json.Marshal(next)
			if err != nil {
				return st, err
			}
			st2 := st
			st2.Context = data
			if waits && !timedOut {
				return beginWait(ctx, r, s, st2, i, w, &next)
			}
			st2.Step = i + 1
			if st2.Step == len(s.steps) {
				st2.Status = Completed
			}
			return st2, nil
		})
		if err == nil {
			st = saved // only once the step's transaction committed
		}
		if errors.Is(err, ErrFenced) {
			return c, err // another owner drives it now
		}
		if err != nil && ctx.Err() != nil {
			// Stopping, not failing: left Running, consistent, for recovery.
			return c, errors.Join(ctx.Err(), err)
		}
		if err != nil {
			// The compensations see the context as committed, not as the
			// failed act left it (a map or a slice it changed is shared).
			var committed C
			if err := json.Unmarshal(st.Context, &committed); err != nil {
				return c, fmt.Errorf("fxsaga: saga %s: context: %w", st.ID, err)
			}
			c = committed
			failed = err
			st.Status, st.Error = Compensating, fmt.Sprintf("step %s: %v", s.names[i], err)
			st.Step = i - 1 // the last completed step
			if timedOut {
				// The waiting step's own act committed before it waited;
				// OnTimeout's did not.
				st.Step, st.TimedOut = i, slices.DeleteFunc(slices.Clone(st.TimedOut), func(k int) bool { return k == i })
			}
			st.Version++
			if err := r.store.Save(ctx, st); err != nil {
				return c, err
			}
			break
		}
		c = next
		if st.Status == Waiting {
			return c, waitingOf(st, s.names[i])
		}
		if report != nil {
			report(Progress[C]{SagaID: st.ID, Step: s.names[i], Action: action, Context: c})
		}
	}
	switch st.Status {
	case Completed:
		return c, nil
	case Waiting:
		return c, waitingOf(st, s.names[st.Step])
	}
	return compensate(ctx, r, s, st, c, failed, report)
}

// beginWait is st, whose step i has acted, saved as waiting for w's
// event, with its deadline scheduled in the step's transaction when the
// outbox's unit of work runs it (without one, recovery times it out).
func beginWait[C any](ctx context.Context, r *Runner, s *Saga[C], st State, i int, w waiter[C], c *C) (State, error) {
	key := w.key(c)
	if key == "" {
		return st, fmt.Errorf("fxsaga: saga %s: step %s: Key returned \"\": nothing could resume the saga", s.name, s.names[i])
	}
	st.Status, st.Awaiting, st.Key, st.Deadline = Waiting, w.eventName(), key, r.now().Add(w.within())
	if fxoutbox.Tx(ctx) != nil {
		id, err := fxoutbox.Schedule(ctx, st.Deadline, Deadline{Saga: s.name, ID: st.ID, Step: i, Version: st.Version + 1})
		if err != nil {
			return st, fmt.Errorf("fxsaga: saga %s: step %s: its deadline: %w (fxsaga.Module registers fxsaga.Deadline as a scheduled command; without fx, add fxoutbox.ScheduledCommand[fxsaga.Deadline]() to the outbox's Config.Deliverables)", s.name, s.names[i], err)
		}
		st.Timer = id
	}
	return st, nil
}
