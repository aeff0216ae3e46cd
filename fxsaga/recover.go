package fxsaga

import (
	"context"
	"errors"

	"go.uber.org/zap"
)

// recoveryBatch is how many sagas recovery claims, or times out, at once.
const recoveryBatch = 100

// Recover resumes every unfinished saga of s that no live owner drives:
// forward if it had not begun compensating, else compensation to the end;
// and times out the waiting ones whose deadline passed by the runner's
// clock (the outbox's scheduled deadline does that on time; this is the
// net under it, and the only timer of a store without the outbox). It
// claims them a batch at a time, never all at once, and never a waiting
// saga. It returns each one's outcome error joined.
func Recover[C any](ctx context.Context, r *Runner, s *Saga[C]) error {
	if s.err != nil {
		return s.err
	}
	if err := outside(ctx, s.name); err != nil {
		return err
	}
	r.track(s)
	var errs []error
	for ctx.Err() == nil {
		states, err := r.claim(ctx, s.name)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		driven := 0
		for _, st := range states {
			if !r.acquire(st.ID) {
				continue // a Run of this process drives it
			}
			driven++
			r.recovered.Add(1)
			_, err := drive(ctx, r, s, st, nil)
			r.release(st.ID)
			if err != nil {
				var sagaErr *Error
				var waiting *Pending
				if errors.As(err, &waiting) {
					continue
				}
				if !errors.As(err, &sagaErr) || sagaErr.Status == Failed || sagaErr.Status == SetAside {
					errs = append(errs, err)
				}
			}
		}
		if len(states) < recoveryBatch || driven == 0 {
			break
		}
	}
	for ctx.Err() == nil {
		states, err := r.store.Overdue(ctx, s.name, r.now(), recoveryBatch)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		moved := 0
		for _, st := range states {
			if err := s.expireWith(ctx, r, st); err != nil {
				errs = append(errs, err)
				continue
			}
			moved++
		}
		if len(states) < recoveryBatch || moved == 0 {
			break
		}
	}
	return errors.Join(errs...)
}

// claim is the store's Claim, leaving alone, where the store can, the
// sagas r drives now (the SQL store: it would fence r's own next save).
func (r *Runner) claim(ctx context.Context, name string) ([]State, error) {
	if c, ok := r.store.(interface {
		claimExcept(ctx context.Context, name string, limit int, except func(string) bool) ([]State, error)
	}); ok {
		return c.claimExcept(ctx, name, recoveryBatch, r.driven)
	}
	return r.store.Claim(ctx, name, recoveryBatch)
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
