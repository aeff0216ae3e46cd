package fxsaga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// How a runner drives a saga's steps.

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
