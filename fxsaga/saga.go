package fxsaga

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Step is one step of a saga over its context C: an action and the
// compensation that undoes it. Both receive the saga's context, which the
// action may change; the saga keeps it between steps. A step is an
// ordinary value (under fx, made by an ordinary constructor), and it may
// Emit events: each call runs as a mediator call of its own.
//
// A step is named, in errors, logs and diagrams, by its type's name, or by
// its Name method if it has one (a Name() string); Define numbers the
// repeats of a name.
type Step[C any] interface {
	// Act does the step's work.
	Act(ctx context.Context, c *C) error
	// Compensate undoes what Act did. It is retried with backoff and must
	// be idempotent (see IdempotencyKey).
	Compensate(ctx context.Context, c *C) error
}

// Status is where a saga is.
type Status string

// A saga's statuses. Running and Compensating are not final: recovery
// resumes them. Compensating never acts again (strict backward recovery).
// Waiting is not final either, but recovery leaves it alone: it waits for
// an event (see Await), which resumes it, or for its deadline, which
// times it out.
// SetAside is a saga whose stored state no longer fits its definition (a
// deployment removed or reordered steps while it was in flight, or its
// context cannot be read back): recovery leaves it alone, logs it at
// error level, and lists it with the failed ones (SQL.Failed,
// Memory.Failed), for a person to decide; its Error says why.
const (
	Running      Status = "RUNNING"
	Waiting      Status = "WAITING"
	Compensating Status = "COMPENSATING"
	Completed    Status = "COMPLETED"
	Compensated  Status = "COMPENSATED"
	Failed       Status = "FAILED"
	SetAside     Status = "SET_ASIDE"
	// Resolved is a saga a person closed by hand (see SQL.Resolve): it is
	// final, and its Error says who and why.
	Resolved Status = "RESOLVED"
)

// Final reports whether s is a final status: one recovery never resumes.
func (s Status) Final() bool {
	return s == Completed || s == Compensated || s == Failed || s == SetAside || s == Resolved
}

// Saga is a saga's definition: its name and its ordered steps. Make one
// with Define.
type Saga[C any] struct {
	name  string
	steps []Step[C]
	names []string
	waits map[int]waiter[C] // the steps that wait, by index
	key   func(c *C) string // its business key (KeyBy), or nil
	err   error             // why the definition cannot run: Run, Stream, Recover and Register return it

	versions contextVersions // its context's version and upcasters (see Version)
}

// MaxKey is the longest business key, in bytes (see Saga.KeyBy).
const MaxKey = 255

// KeyBy declares the saga's business key, read from its context as it
// starts: the booking or the order it is about. A saga is then found by
// it (Reader.ByKey; fxcqrs saga show -key K), and a definition has at
// most one unfinished saga (Running, Waiting or Compensating) per key:
// Run and Stream of a second one return an *AlreadyStarted that names
// the first, and start nothing. Once the first completes, compensates,
// fails or is set aside, the key is free again (a failed saga's effects
// may still stand: a person looks at it); a repair that puts it back to
// work (SQL.Retry, CompensateFrom) while a newer saga holds its key is
// refused with an *AlreadyStarted naming that one. A key "" starts a saga without one; a
// key over MaxKey bytes is refused. A nil key is the definition's error,
// which Register turns into fx.New's. It returns s, for Define's caller:
//
//	fxsaga.Define[Booking]("booking", hold, pay, confirm).KeyBy(func(b *Booking) string { return b.ID })
func (s *Saga[C]) KeyBy(key func(c *C) string) *Saga[C] {
	if key == nil && s.err == nil {
		s.err = fmt.Errorf("fxsaga.Define(%q).KeyBy: a nil key function", s.name)
	}
	s.key = key
	return s
}

// AlreadyStarted is the error of Run and Stream (and of a repair that puts
// a saga back to work) for a saga whose business
// key (Saga.KeyBy) an unfinished saga of the same definition has.
type AlreadyStarted struct {
	Saga   string // the definition's name
	Key    string // the business key
	SagaID string // the unfinished saga's id: Load it, or wait for it
}

func (e *AlreadyStarted) Error() string {
	return fmt.Sprintf("fxsaga: saga %s of key %q is already started (%s) and not finished", e.Saga, e.Key, e.SagaID)
}

// Define returns the saga called name with steps, run in order. A saga
// needs at least one step, none of them nil: otherwise Run, Stream and
// Recover return an error that says so, and Register fails fx.New with
// it.
func Define[C any](name string, steps ...Step[C]) *Saga[C] {
	s := &Saga[C]{name: name, steps: steps}
	if len(steps) == 0 {
		s.err = fmt.Errorf("fxsaga.Define(%q): a saga needs at least one step", name)
		return s
	}
	s.waits = map[int]waiter[C]{}
	for i, st := range steps {
		if st == nil {
			s.err = fmt.Errorf("fxsaga.Define(%q): step %d is nil", name, i+1)
			return s
		}
		if w, ok := st.(waiter[C]); ok {
			if err := w.check(); err != nil {
				s.err = fmt.Errorf("fxsaga.Define(%q): step %d: %w", name, i+1, err)
				return s
			}
			s.waits[i] = w
		}
	}
	s.names = uniqueNames(steps)
	return s
}

// uniqueNames names each step by stepName, numbering the repeats of a
// name (" (2)", " (3)", …) with numbers no other step's name has taken.
func uniqueNames[C any](steps []Step[C]) []string {
	names := make([]string, len(steps))
	taken := map[string]bool{}
	for i, s := range steps {
		names[i] = stepName(s)
		taken[names[i]] = true
	}
	seen := map[string]bool{}
	for i, base := range names {
		if !seen[base] {
			seen[base] = true
			continue
		}
		for k := 2; ; k++ {
			if n := fmt.Sprintf("%s (%d)", base, k); !taken[n] {
				names[i], taken[n] = n, true
				break
			}
		}
	}
	return names
}

// misfit says why st does not fit the definition, or "".
func (s *Saga[C]) misfit(st State) string {
	switch st.Status {
	case Waiting:
		w, ok := s.waits[st.Step]
		if !ok {
			return fmt.Sprintf("waiting at step %d, which does not wait in this definition: was a step changed while it waited?", st.Step)
		}
		if w.eventName() != st.Awaiting {
			return fmt.Sprintf("waiting at step %d for %s, which now waits for %s: was a step changed while it waited?", st.Step, st.Awaiting, w.eventName())
		}
	case Running:
		if st.Step < 0 || st.Step >= len(s.steps) {
			return fmt.Sprintf("stored at step %d of a definition with %d steps: was a step removed while it ran?", st.Step, len(s.steps))
		}
	case Compensating:
		if st.Step < -1 || st.Step >= len(s.steps) {
			return fmt.Sprintf("compensating from step %d of a definition with %d steps: was a step removed while it ran?", st.Step, len(s.steps))
		}
	}
	for _, k := range st.TimedOut {
		if w, ok := s.waits[k]; !ok || w.timeoutStep() == nil {
			return fmt.Sprintf("timed out at step %d, which has no OnTimeout step in this definition: was a step changed while it ran?", k)
		}
	}
	var c C
	if err := json.Unmarshal(st.Context, &c); err != nil {
		return "its stored context cannot be read back: " + err.Error()
	}
	return ""
}

func stepName(s any) string {
	if n, ok := s.(interface{ Name() string }); ok {
		return n.Name()
	}
	t := reflect.TypeOf(s)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}

// Name returns the saga's name.
func (s *Saga[C]) Name() string { return s.name }

// State is a saga's persisted state.
type State struct {
	ID      string          // the saga's id, a UUID
	Name    string          // the saga's definition
	Status  Status          // where it is
	Step    int             // Running: the next step to act; Compensating: the next to compensate; Waiting: the step that waits
	Context json.RawMessage // the saga's context, as JSON
	// ContextVersion is the version of Context's shape (Saga.Version): 1
	// (or 0) for a saga stored before its definition declared one.
	ContextVersion int
	Version        int64  // bumped by every save: a fencing token
	Error          string // why it compensates, or why it failed

	// Awaiting is the event type a Waiting saga waits for (its Go type,
	// as fmt's %v prints it: "orders.PaymentConfirmed").
	Awaiting string
	// Key is the correlation a Waiting saga waits for: the event's Match
	// must return it.
	Key string
	// Deadline is when a Waiting saga stops waiting and times out.
	Deadline time.Time
	// Timer is the id of the scheduled message (fxoutbox.Schedule) that
	// times a Waiting saga out, when the outbox holds it; resuming cancels
	// it.
	Timer string
	// TimedOut lists the steps whose deadline passed and whose OnTimeout
	// step runs instead of the event's Then: compensation undoes that one.
	TimedOut []int
	// Shape is the JSON of the definition's Shape when the saga began,
	// for tools that draw it without the service's code (empty for sagas
	// older than the schema's version 3).
	Shape json.RawMessage
	// BusinessKey is what the saga is about, from its context when it
	// began (Saga.KeyBy): "" without one.
	BusinessKey string
	// Created is when the saga was created, by its store's clock; zero
	// for a saga created before the store kept it (migration 0005).
	Created time.Time
	// Tenant is the tenant the saga works for: fxbus.TenantOf of the
	// call that began it ("" is the default tenant, and the tenant of
	// every saga stored before migration 0007). Every act, compensation,
	// resume and deadline of the saga runs under it (fxbus.WithTenant),
	// whatever context drives it; only an awaited event of this tenant
	// resumes it; its business key is its tenant's.
	Tenant string
}

// holdsKey reports whether st holds its business key against a second
// saga of its definition: it has one, and is not finished.
func (st State) holdsKey() bool { return st.BusinessKey != "" && !st.Status.Final() }

// Entry is one line of a saga's log: an act or a compensation, and how it
// ended.
type Entry struct {
	SagaID string    // whose
	Step   int       // which step, by index
	Action string    // "act" or "compensate"
	Err    string    // "" when it succeeded
	At     time.Time // when it ended
}

// Error is a saga that did not complete: which step failed, and how its
// compensation ended.
type Error struct {
	// SagaID is the saga's id.
	SagaID string
	// Step is the step that failed, by name.
	Step string
	// Err is the step's error.
	Err error
	// Status is Compensated when every completed step was compensated,
	// Failed when a compensation kept failing, SetAside when its stored
	// state did not fit its definition (Err says why).
	Status Status
	// Compensation is the last compensation error, for Failed.
	Compensation error
}

// Error says which step failed and what compensation did, or why the saga
// was set aside.
func (e *Error) Error() string {
	if e.Status == SetAside {
		return fmt.Sprintf("fxsaga: saga %s set aside: %v", e.SagaID, e.Err)
	}
	s := fmt.Sprintf("fxsaga: saga %s: step %s failed: %v; %s", e.SagaID, e.Step, e.Err, strings.ToLower(string(e.Status)))
	if e.Compensation != nil {
		s += ": compensation failed: " + e.Compensation.Error()
	}
	return s
}

// Unwrap returns the step's error and the compensation's, leaving out
// the nil ones as errors.Join does: the compensation's is nil unless the
// saga Failed, and a nil in the result breaks code that walks the chain
// (testify's ErrorAs dereferenced it).
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	for _, err := range []error{e.Err, e.Compensation} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

type keyCtx struct{}

// IdempotencyKey returns the key of the act or compensation ctx belongs
// to: the saga's id, the step's index and the kind ("act" or
// "compensate"). The same on every attempt, a re-run after a crash
// included: pass it to external systems so that they deduplicate.
func IdempotencyKey(ctx context.Context) string {
	k, _ := ctx.Value(keyCtx{}).(string)
	return k
}

var (
	_ Reader = (*Memory)(nil)
	_ Reader = (*SQL)(nil)
)
