package fxsaga

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// compensate undoes the completed steps in reverse, from st.Step down.
func compensate[C any](ctx context.Context, r *Runner, s *Saga[C], st State, c C, cause error, report func(Progress[C])) (C, error) {
	failedStep := failedStepOf(s, st)
	if cause == nil {
		cause = errors.New(st.Error) // recovered: the cause as persisted
	}
	for st.Step >= 0 {
		if err := ctx.Err(); err != nil {
			return c, err // stopping: left Compensating, consistent, for recovery
		}
		i := st.Step
		var lastErr error
		wait := r.cfg.CompensationBackoff
		for attempt := 1; attempt <= r.cfg.CompensationAttempts; attempt++ {
			var saved State
			saved, lastErr = r.step(ctx, st, i, s.names[i], "compensate", func(ctx context.Context) (State, error) {
				if w, ok := s.waits[i]; ok && slices.Contains(st.TimedOut, i) {
					if err := w.timeoutStep().Compensate(ctx, &c); err != nil {
						return st, err
					}
				}
				if err := s.steps[i].Compensate(ctx, &c); err != nil {
					return st, err
				}
				st2 := st
				st2.Step = i - 1
				if st2.Step < 0 {
					st2.Status = Compensated
				}
				return st2, nil
			})
			if lastErr == nil {
				r.compensations.Add(1)
				st = saved
				if report != nil {
					report(Progress[C]{SagaID: st.ID, Step: s.names[i], Action: "compensate", Context: c})
				}
			}
			if lastErr == nil || errors.Is(lastErr, ErrFenced) {
				break
			}
			if r.storeless(st.Tenant, lastErr) {
				return c, notServed(st, s.names[i], lastErr) // no attempt of the compensation's: its unit of work never began
			}
			r.compFailures.Add(1)
			if ctx.Err() != nil {
				// Stopping, not failing: left Compensating, consistent,
				// for recovery; never Failed for a cancellation.
				return c, errors.Join(ctx.Err(), lastErr)
			}
			if attempt < r.cfg.CompensationAttempts {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return c, ctx.Err() // left Compensating, consistent, for recovery
				}
				wait *= 2
			}
		}
		if errors.Is(lastErr, ErrFenced) {
			return c, lastErr
		}
		if lastErr != nil {
			st.Status, st.Error, st.Version = Failed, fmt.Sprintf("%s; compensating %s: %v", st.Error, s.names[i], lastErr), st.Version+1
			if err := r.save(ctx, st); err != nil {
				return c, err
			}
			r.failed.Add(1)
			r.logger.Error("fxsaga: saga failed: a compensation kept failing; it needs a person",
				zap.String("saga", s.name), zap.String("id", st.ID), zap.String("step", s.names[i]),
				zap.Int("attempts", r.cfg.CompensationAttempts), zap.Error(lastErr))
			return c, &Error{SagaID: st.ID, Step: failedStep, Err: cause, Status: Failed, Compensation: lastErr}
		}
	}
	if st.Status != Compensated { // nothing was left to compensate
		st.Status, st.Version = Compensated, st.Version+1
		if err := r.save(ctx, st); err != nil {
			return c, err
		}
	}
	return c, &Error{SagaID: st.ID, Step: failedStep, Err: cause, Status: Compensated}
}

// failedStepOf names the step whose failure (or deadline) st compensates:
// the one its Error names ("step NAME: …"), else the one after the last
// completed.
func failedStepOf[C any](s *Saga[C], st State) string {
	for _, n := range s.names {
		if strings.HasPrefix(st.Error, "step "+n+": ") {
			return n
		}
	}
	if next := st.Step + 1; next >= 0 && next < len(s.names) {
		return s.names[next]
	}
	return ""
}
