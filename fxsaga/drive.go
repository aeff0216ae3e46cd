package fxsaga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// How a runner drives a saga's steps.

// drive takes a saga from its state to a final one, or sets it aside when
// its state does not fit the definition.
func drive[C any](ctx context.Context, r *Runner, s *Saga[C], st State, report func(Progress[C])) (c C, err error) {
	ctx = fxbus.WithTenant(ctx, st.Tenant) // the saga's, whatever context drives it
	ctx, finish := r.observe(ctx, Activity{Saga: s.name, ID: st.ID})
	defer func() { finish(err) }()
	st, reason := s.fit(st) // upcast, then the shape check
	if reason != "" {
		return c, r.setAside(ctx, st, reason)
	}
	return driveSteps(ctx, r, s, st, report)
}

// driveSteps acts st's steps from st.Step on, each in a transaction of
// its own, until the saga completes, waits, or a step fails; then it
// compensates.
func driveSteps[C any](ctx context.Context, r *Runner, s *Saga[C], st State, report func(Progress[C])) (C, error) {
	c, err := contextOf[C](st)
	if err != nil {
		return c, err
	}
	var failed error
	for st.Status == Running && st.Step < len(s.steps) {
		if err := ctx.Err(); err != nil {
			return c, err // stopping: left Running, consistent, for recovery
		}
		i := st.Step
		action, act := s.actOf(st, i)
		next := c
		saved, err := r.step(ctx, st, i, s.names[i], action, func(ctx context.Context) (State, error) {
			return advance(ctx, r, s, st, act, &next)
		})
		if errors.Is(err, ErrFenced) {
			return c, err // another owner drives it now
		}
		if err != nil && ctx.Err() != nil {
			// Stopping, not failing: left Running, consistent, for recovery.
			return c, errors.Join(ctx.Err(), err)
		}
		if err != nil && r.storeless(st.Tenant, err) {
			return c, notServed(st, s.names[i], err)
		}
		if err != nil {
			failed = err
			if st, c, err = failStep(ctx, r, s, st, c, err); err != nil {
				return c, err
			}
			break
		}
		st, c = saved, next // only once the step's transaction committed
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

// contextOf reads st's context back.
func contextOf[C any](st State) (C, error) {
	var c C
	if err := json.Unmarshal(st.Context, &c); err != nil {
		return c, fmt.Errorf("fxsaga: saga %s: context: %w", st.ID, err)
	}
	return c, nil
}

// timedOut reports whether step i of st waited and its deadline passed,
// so that its OnTimeout step acts instead of the event's Then.
func (s *Saga[C]) timedOut(st State, i int) bool {
	_, waits := s.waits[i]
	return waits && slices.Contains(st.TimedOut, i)
}

// actOf is what acts at step i of st, and its action's name: the step's
// Act, or its OnTimeout step's once the step timed out.
func (s *Saga[C]) actOf(st State, i int) (string, func(context.Context, *C) error) {
	if s.timedOut(st, i) {
		return "timeout", s.waits[i].timeoutStep().Act
	}
	return "act", s.steps[i].Act
}

// advance runs act, st's step's, over c, and returns the state that
// follows, for the step's transaction to save: waiting for the step's
// event when it waits (and has not timed out), else at the next step, or
// Completed after the last.
func advance[C any](ctx context.Context, r *Runner, s *Saga[C], st State, act func(context.Context, *C) error, c *C) (State, error) {
	i := st.Step
	if err := act(ctx, c); err != nil {
		return st, err
	}
	data, err := json.Marshal(*c)
	if err != nil {
		return st, err
	}
	next := st
	next.Context = data
	if w, waits := s.waits[i]; waits && !s.timedOut(st, i) {
		return beginWait(ctx, r, s, next, i, w, c)
	}
	next.Step = i + 1
	if next.Step == len(s.steps) {
		next.Status = Completed
	}
	return next, nil
}

// failStep saves st, whose step failed with cause, as Compensating from
// the last step that committed. The compensations see the context as
// committed, not as the failed act left c (a map or a slice it changed is
// shared): failStep returns that one.
func failStep[C any](ctx context.Context, r *Runner, s *Saga[C], st State, c C, cause error) (State, C, error) {
	committed, err := contextOf[C](st)
	if err != nil {
		return st, c, err
	}
	i := st.Step
	timedOut := s.timedOut(st, i)
	st.Status, st.Error = Compensating, fmt.Sprintf("step %s: %v", s.names[i], cause)
	st.Step = i - 1 // the last completed step
	if timedOut {
		// The waiting step's own act committed before it waited;
		// OnTimeout's did not.
		st.Step, st.TimedOut = i, slices.DeleteFunc(slices.Clone(st.TimedOut), func(k int) bool { return k == i })
	}
	st.Version++
	return st, committed, r.save(ctx, st)
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

// notServed is the error of a saga whose step could not run because its
// tenant's store is not served now (it left the source, or was not read
// yet): the saga is left as it stands in that store, neither failed nor
// compensated, for recovery once the store is served again.
func notServed(st State, step string, err error) error {
	return fmt.Errorf("fxsaga: saga %s (%s): step %s: left %s in tenant %q's store, which is not served now: %w",
		st.Name, st.ID, step, st.Status, st.Tenant, err)
}

// save saves st outside a step: in the store of its tenant (see within).
func (r *Runner) save(ctx context.Context, st State) error {
	return r.within(ctx, st.Tenant, func(ctx context.Context) error { return r.store.Save(ctx, st) })
}
