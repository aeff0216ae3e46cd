package fxsaga

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

// Runner runs sagas on a mediator and a store.
type Runner struct {
	m       *fxcqrs.Mediator
	store   Store
	cfg     RunnerConfig
	logger  *zap.Logger
	now     func() time.Time
	tenancy Tenancy // nil: every tenant's sagas in the store's own database

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

// driven reports whether r drives saga id now.
func (r *Runner) driven(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.driving[id] > 0
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
	// Tenancy is where each tenant's sagas live, when tenants have
	// stores of their own: recovery walks each tenant's store, and what
	// the runner writes outside a step's unit of work goes to the saga's
	// tenant's. Module sets it to the graph's *fxoutbox.Outbox when left
	// nil. Nil: every tenant's sagas live in the store's own database.
	Tenancy Tenancy `json:"-" yaml:"-"`
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
		m: m, store: store, cfg: cfg, logger: logger, now: cfg.Now, tenancy: cfg.Tenancy,
		driving: map[string]int{}, defs: map[string]Definition{}, waits: map[reflect.Type][]Definition{},
	}
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
	tenant := fxbus.TenantOf(ctx)
	if len(tenant) > fxbus.MaxTenantIDLength {
		return State{}, fmt.Errorf("fxsaga: saga %s: its tenant is %d bytes, more than fxbus.MaxTenantIDLength (%d)", s.name, len(tenant), fxbus.MaxTenantIDLength)
	}
	st := State{ID: uuid.NewString(), Name: s.name, Status: Running, Context: data, ContextVersion: s.contextVersion(), Version: 1, Shape: shape, Tenant: tenant}
	if s.key != nil {
		if st.BusinessKey = s.key(&c); len(st.BusinessKey) > MaxKey {
			return State{}, fmt.Errorf("fxsaga: saga %s: its key is %d bytes, more than MaxKey (%d)", s.name, len(st.BusinessKey), MaxKey)
		}
	}
	r.acquire(st.ID)
	if err := r.within(ctx, tenant, func(ctx context.Context) error { return r.store.Create(ctx, st) }); err != nil {
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
// complete, a final (zero, *Error), or (zero, *Pending) when it waits. A
// consumer that stops early does not stop the saga: it runs to its end,
// or stays consistent for recovery.
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
