package fxsaga

import (
	"context"
	"errors"
	"fmt"

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
// saga. With a Tenancy (RunnerConfig.Tenancy) it walks each tenant's
// store in turn, the default tenant's first, claiming and scanning in a
// transaction of the tenant's (InTenant); each saga is driven under its
// own tenant (State.Tenant), whatever store it was found in. It returns
// each one's outcome error joined, and a tenant whose store failed, named.
func Recover[C any](ctx context.Context, r *Runner, s *Saga[C]) error {
	if s.err != nil {
		return s.err
	}
	if err := outside(ctx, s.name); err != nil {
		return err
	}
	r.track(s)
	var errs []error
	for _, tenant := range r.stores() {
		if ctx.Err() != nil {
			break
		}
		if err := recoverIn(ctx, r, s, tenant); err != nil {
			if tenant != "" {
				err = fmt.Errorf("fxsaga: saga %s: recovery in tenant %q's store: %w", s.name, tenant, err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// recoverIn recovers the sagas of s in tenant's store: claimed (or found
// overdue) in the store, a batch at a time, and driven after, each step
// in a unit of work of its own.
func recoverIn[C any](ctx context.Context, r *Runner, s *Saga[C], tenant string) error {
	var errs []error
	for ctx.Err() == nil {
		var states []State
		err := r.inStore(ctx, tenant, func(ctx context.Context) (err error) {
			states, err = r.claim(ctx, s.name)
			return err
		})
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
		var states []State
		err := r.inStore(ctx, tenant, func(ctx context.Context) (err error) {
			states, err = r.store.Overdue(ctx, s.name, r.now(), recoveryBatch)
			return err
		})
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
	if err := r.save(ctx, st); err != nil {
		return err
	}
	r.logger.Error("fxsaga: saga set aside: its stored state does not fit its definition; it needs a person",
		zap.String("saga", st.Name), zap.String("id", st.ID), zap.Int("step", st.Step), zap.String("reason", reason))
	return &Error{SagaID: st.ID, Err: errors.New(reason), Status: SetAside}
}
