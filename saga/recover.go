package fxsaga

import (
	"context"
	"errors"

	"go.uber.org/zap"
)

// Recover resumes every unfinished saga of s: forward if it had not begun
// compensating, else compensation to the end. It returns each one's
// outcome error joined.
func Recover[C any](ctx context.Context, r *Runner, s *Saga[C]) error {
	if s.err != nil {
		return s.err
	}
	if err := outside(ctx, s.name); err != nil {
		return err
	}
	states, err := r.store.Claim(ctx, s.name)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		if !r.acquire(st.ID) {
			continue // a Run of this process drives it
		}
		_, err := drive(ctx, r, s, st, nil)
		r.release(st.ID)
		if err != nil {
			var sagaErr *Error
			if !errors.As(err, &sagaErr) || sagaErr.Status == Failed || sagaErr.Status == SetAside {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// setAside saves st as SetAside with reason, logs it at error level, and
// returns the *Error that says so.
func (r *Runner) setAside(ctx context.Context, st State, reason string) error {
	st.Status, st.Error, st.Version = SetAside, reason, st.Version+1
	if err := r.store.Save(ctx, st); err != nil {
		return err
	}
	r.logger.Error("fxsaga: saga set aside: its stored state does not fit its definition; it needs a person",
		zap.String("saga", st.Name), zap.String("id", st.ID), zap.Int("step", st.Step), zap.String("reason", reason))
	return &Error{SagaID: st.ID, Err: errors.New(reason), Status: SetAside}
}
