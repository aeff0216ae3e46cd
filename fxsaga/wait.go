package fxsaga

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"
)

// MaxWithin is the longest wait: 100 years. A deadline is kept in
// nanoseconds since 1970 in an int64, which run out in 2262; a longer
// Within would wrap round to a deadline in the past.
const MaxWithin = 100 * 365 * 24 * time.Hour

// Wait describes a step that waits for an event: a payment provider's
// webhook, another service's StockReserved, a person's approval. Make it a
// step with Await. Key, Match and Within are required.
//
// The step acts (Step's Act, if there is one), and, in the same
// transaction, the saga is saved as Waiting for an event of type E whose
// Match equals the saga's Key, until Within has passed. Acting and waiting
// commit together, so that a request Step sends (a routed event, through
// the outbox) cannot be answered before the saga waits for the answer.
// Run then returns a *Pending, and nothing holds the saga: no goroutine,
// no lease; its row and, under the outbox, a scheduled message for its
// deadline.
//
// When the event arrives (on any replica: through fxbus.Subscribe from
// another service, or in-process; see Resume), the saga resumes in one
// transaction: the event's inbox record (under the outbox's Config.Inbox
// or durable delivery), Then's writes and routed events, the saga's new
// state, and the deadline's cancellation. The steps after it run in
// transactions of their own, as Run's do. If the deadline passes first,
// OnTimeout acts in a transaction of its own and the saga goes on, or,
// without OnTimeout, the saga compensates. The event and the deadline race
// with one winner: the first to commit; the other finds the saga no longer
// waiting and does nothing.
type Wait[C, E any] struct {
	// Name names the step in errors, logs and diagrams. Default: Step's
	// name, else "wait for E".
	Name string
	// Step, if set, acts before the saga waits, in the same transaction,
	// and its Compensate undoes the whole step (what Step and Then did,
	// with the context as Then left it) when a later step fails or the
	// deadline compensates.
	Step Step[C]
	// Key is the correlation the saga waits on, from its context once Step
	// acted: the order's id, say. It must not return "".
	Key func(c *C) string
	// Match is the correlation an event carries: the saga whose Key equals
	// it resumes. An event whose Match is "" resumes none.
	Match func(e E) string
	// Within is how long the saga waits: its deadline is the runner's
	// clock's now plus Within, when it begins to wait, at most MaxWithin.
	// It must be
	// positive: a saga that waits for ever is a leak no one sees.
	Within time.Duration
	// Then, if set, runs when the event arrives, in the resuming
	// transaction: it takes what the saga needs from the event into its
	// context, and may write through the unit of work and Emit. An error
	// rolls the transaction back and fails the event's handling: the
	// message is retried as its subscription (or durable delivery) retries
	// and, failing for good, dead-lettered, while the saga goes on waiting
	// for its deadline.
	Then func(ctx context.Context, c *C, e E) error
	// OnTimeout, if set, acts when the deadline passes first, in a
	// transaction of its own, and the saga goes on with the next step; if
	// it fails, the saga compensates, this step included. Its Compensate
	// runs, before Step's, when a later step fails. Without it the saga
	// compensates at the deadline.
	OnTimeout Step[C]
}

// Await returns w as a step of a saga over C, for Define.
func Await[C, E any](w Wait[C, E]) Step[C] { return &waitStep[C, E]{w: w} }

// waiter is a step that waits, whatever its event type.
type waiter[C any] interface {
	Step[C]
	check() error
	eventType() reflect.Type
	eventName() string
	within() time.Duration
	timeoutStep() Step[C]
	key(c *C) string
	match(e any) string
	arrive(ctx context.Context, c *C, e any) error
}

type waitStep[C, E any] struct{ w Wait[C, E] }

// Name names the step: Wait.Name, else Step's name, else "wait for E".
func (s *waitStep[C, E]) Name() string {
	switch {
	case s.w.Name != "":
		return s.w.Name
	case s.w.Step != nil:
		return stepName(s.w.Step)
	}
	return "wait for " + s.eventType().Name()
}

// Act is Wait.Step's Act, if there is one; the runner then saves the
// saga waiting, in the same transaction.
func (s *waitStep[C, E]) Act(ctx context.Context, c *C) error {
	if s.w.Step != nil {
		return s.w.Step.Act(ctx, c)
	}
	return nil
}

// Compensate undoes the step: Step's Compensate, if it has one.
func (s *waitStep[C, E]) Compensate(ctx context.Context, c *C) error {
	if s.w.Step != nil {
		return s.w.Step.Compensate(ctx, c)
	}
	return nil
}

func (s *waitStep[C, E]) check() error {
	var errs []error
	t := s.eventType()
	if t.Kind() == reflect.Interface {
		errs = append(errs, fmt.Errorf("fxsaga.Await: the event type %v is an interface: wait for a concrete event type", t))
	}
	if s.w.Key == nil {
		errs = append(errs, errors.New("fxsaga.Await: Key is nil: say which value of the saga's context the event must match"))
	}
	if s.w.Match == nil {
		errs = append(errs, fmt.Errorf("fxsaga.Await: Match is nil: say which value of %v must equal the saga's Key", t))
	}
	if s.w.Within <= 0 {
		errs = append(errs, fmt.Errorf("fxsaga.Await: Within must be positive: got %v", s.w.Within))
	}
	if s.w.Within > MaxWithin {
		errs = append(errs, fmt.Errorf("fxsaga.Await: Within is at most MaxWithin (%v, 100 years: a deadline is kept in nanoseconds since 1970, which run out in 2262): got %v", MaxWithin, s.w.Within))
	}
	return errors.Join(errs...)
}

func (s *waitStep[C, E]) eventType() reflect.Type { return reflect.TypeFor[E]() }
func (s *waitStep[C, E]) eventName() string       { return s.eventType().String() }
func (s *waitStep[C, E]) within() time.Duration   { return s.w.Within }
func (s *waitStep[C, E]) timeoutStep() Step[C]    { return s.w.OnTimeout }
func (s *waitStep[C, E]) key(c *C) string         { return s.w.Key(c) }
func (s *waitStep[C, E]) match(e any) string      { return s.w.Match(e.(E)) }

func (s *waitStep[C, E]) arrive(ctx context.Context, c *C, e any) error {
	if s.w.Then == nil {
		return nil
	}
	return s.w.Then(ctx, c, e.(E))
}

// Pending is how Run and Stream end for a saga that waits: it is saved as
// Waiting, and resumes when its event arrives or its deadline passes, on
// any replica. It is an error value so that Run's signature stays the one
// of a saga that ends; a caller tells it apart with errors.As.
type Pending struct {
	SagaID string    // the saga's id
	Step   string    // the step that waits
	Event  string    // the event type it waits for
	Key    string    // the correlation the event must match
	Until  time.Time // its deadline
}

// Error says what the saga waits for.
func (w *Pending) Error() string {
	return fmt.Sprintf("fxsaga: saga %s waits at step %s for %s with key %q until %s",
		w.SagaID, w.Step, w.Event, w.Key, w.Until.Format(time.RFC3339))
}

func waitingOf(st State, step string) *Pending {
	return &Pending{SagaID: st.ID, Step: step, Event: st.Awaiting, Key: st.Key, Until: st.Deadline}
}

// Deadline is the scheduled command that times a waiting saga out: the
// outbox delivers it at the saga's deadline to the DeadlineHandler, which
// does nothing if the saga has moved on since (its Version differs).
// Module registers both (and the command as an fxoutbox.ScheduledCommand);
// without fx, add fxoutbox.ScheduledCommand[fxsaga.Deadline]() to the
// outbox's Config.Deliverables and a DeadlineHandler to the mediator.
type Deadline struct {
	Saga    string `json:"saga"`    // the saga's definition
	ID      string `json:"id"`      // the saga's id
	Step    int    `json:"step"`    // the step that waits
	Version int64  `json:"version"` // the saga's version when it began to wait
}

// DeadlineHandler times waiting sagas out when their Deadline arrives.
// Module registers it; without fx, register NewDeadlineHandler() with the
// mediator and Bind it to the runner.
type DeadlineHandler struct{ binding }

// NewDeadlineHandler returns a DeadlineHandler to Bind to a runner.
func NewDeadlineHandler() *DeadlineHandler { return &DeadlineHandler{} }

// Handle times the saga out, unless it moved on since the deadline was
// scheduled.
func (h *DeadlineHandler) Handle(ctx context.Context, d Deadline) error {
	r, err := h.bound("DeadlineHandler")
	if err != nil {
		return err
	}
	return r.deadline(ctx, d)
}

// Resumer resumes the sagas that wait for events of type E: register one
// per awaited type with the mediator (Resume does under fx), so that an E
// that arrives, from a subscription or in-process, reaches them.
type Resumer[E any] struct{ binding }

// NewResumer returns a Resumer to Bind to a runner.
func NewResumer[E any]() *Resumer[E] { return &Resumer[E]{} }

// Handle resumes the sagas waiting for e's correlation. An event that no
// saga waits for (late, a duplicate, another saga's, an unknown key) is
// ignored: it is logged at debug level and counted (Runner.Unmatched);
// it is a fact other services may also consume, not a failure.
func (h *Resumer[E]) Handle(ctx context.Context, e E) error {
	r, err := h.bound("Resumer")
	if err != nil {
		return err
	}
	return r.resume(ctx, reflect.TypeFor[E](), e)
}

// binding is a handler's runner, bound after the mediator it is
// registered with was made (the runner needs that mediator).
type binding struct{ r *Runner }

// Bind makes the handler work for r. Call it before the mediator's first
// call; Module does.
func (b *binding) Bind(r *Runner) { b.r = r }

func (b *binding) bound(what string) (*Runner, error) {
	if b.r == nil {
		return nil, fmt.Errorf("fxsaga: the %s is bound to no runner: call its Bind before the mediator's first call (fxsaga.Module does)", what)
	}
	return b.r, nil
}
