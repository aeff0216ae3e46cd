package fxsaga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"go.uber.org/zap"
)

// errMovedOn is a resume or a timeout that found the saga no longer
// waiting at the version it read: the other of the two committed first.
var errMovedOn = errors.New("fxsaga: the saga no longer waits")

// resume resumes the sagas that wait for e, of type t, with its
// correlation.
func (r *Runner) resume(ctx context.Context, t reflect.Type, e any) error {
	r.mu.Lock()
	defs := slices.Clone(r.waits[t])
	r.mu.Unlock()
	resumed := 0
	var errs []error
	for _, d := range defs {
		n, err := d.resumeWith(ctx, r, t, e)
		resumed += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if resumed == 0 {
		r.unmatched.Add(1)
		r.logger.Debug("fxsaga: an event resumed no saga: none waits for it (late, a duplicate, or another saga's)",
			zap.Stringer("event", t))
	}
	return nil
}

func (s *Saga[C]) awaited() []reflect.Type {
	var out []reflect.Type
	for _, w := range s.waits {
		if !slices.Contains(out, w.eventType()) {
			out = append(out, w.eventType())
		}
	}
	return out
}

// resumeWith resumes the sagas of s that wait for e, and returns how many:
// only those of e's tenant (fxbus.TenantOf), whose key its Match gives.
func (s *Saga[C]) resumeWith(ctx context.Context, r *Runner, t reflect.Type, e any) (int, error) {
	tenant := fxbus.TenantOf(ctx)
	keys := map[string]bool{}
	n := 0
	for i := range s.steps {
		w, ok := s.waits[i]
		if !ok || w.eventType() != t {
			continue
		}
		key := w.match(e)
		if key == "" || keys[key] {
			continue
		}
		keys[key] = true
		var states []State
		err := r.within(ctx, tenant, func(ctx context.Context) (err error) {
			states, err = r.store.Correlated(ctx, tenant, w.eventName(), key)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("fxsaga: saga %s: the sagas waiting for %s %q: %w", s.name, w.eventName(), key, err)
		}
		for _, st := range states {
			if st.Name != s.name {
				continue // another definition's, which resumes it
			}
			ok, err := resumeOne(ctx, r, s, st, e)
			if err != nil {
				return n, err
			}
			if ok {
				n++
			}
		}
	}
	return n, nil
}

// resumeOne resumes st with e, in one transaction: the saga taken from
// Waiting (the row's lock, which decides the race with the deadline),
// Then, the new state, the deadline's cancellation; the steps after it
// once that committed.
func resumeOne[C any](ctx context.Context, r *Runner, s *Saga[C], st State, e any) (bool, error) {
	st, reason := s.fit(st) // upcast, then the shape check
	if reason != "" {
		return false, ignoreAside(r.setAside(ctx, st, reason))
	}
	i := st.Step
	w := s.waits[i]
	if w.match(e) != st.Key || st.Tenant != fxbus.TenantOf(ctx) {
		return false, nil // another key's, or another tenant's: not e's to resume
	}
	take := taken(st)
	saved, err := r.step(ctx, take, i, s.names[i], "resume", func(ctx context.Context) (State, error) {
		if err := r.take(ctx, take); err != nil {
			return take, err
		}
		var c C
		if err := json.Unmarshal(st.Context, &c); err != nil {
			return take, fmt.Errorf("fxsaga: saga %s: context: %w", st.ID, err)
		}
		if err := w.arrive(ctx, &c, e); err != nil {
			return take, err
		}
		data, err := json.Marshal(c)
		if err != nil {
			return take, err
		}
		next := take
		clearWait(&next)
		next.Step, next.Context = i+1, data
		if next.Step == len(s.steps) {
			next.Status = Completed
		}
		return next, nil
	})
	if errors.Is(err, errMovedOn) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("fxsaga: saga %s (%s): resuming step %s: %w", s.name, st.ID, s.names[i], err)
	}
	r.resumed.Add(1)
	goOn(ctx, r, s, saved, st.Timer)
	return true, nil
}

// taken is st taken out of Waiting: Running, one version on.
func taken(st State) State {
	st.Status, st.Version = Running, st.Version+1
	return st
}

// take saves take, the saga taken out of Waiting, in ctx's transaction:
// its row's lock decides the race between the event and the deadline.
// The loser's save is fenced, which is errMovedOn: the other committed
// first.
func (r *Runner) take(ctx context.Context, take State) error {
	err := r.store.Save(ctx, take)
	if errors.Is(err, ErrFenced) {
		return errMovedOn
	}
	return err
}

// deadline times the saga of d out, unless it moved on since.
func (r *Runner) deadline(ctx context.Context, d Deadline) error {
	var st State
	err := r.within(ctx, fxbus.TenantOf(ctx), func(ctx context.Context) (err error) {
		st, err = r.store.Load(ctx, d.ID)
		return err
	})
	if err != nil {
		r.logger.Warn("fxsaga: a deadline for a saga that is not stored", zap.String("saga", d.Saga), zap.String("id", d.ID), zap.Error(err))
		return nil
	}
	if st.Status != Waiting || st.Version != d.Version || st.Step != d.Step {
		return nil // resumed first
	}
	def := r.definition(st.Name)
	if def == nil {
		return fmt.Errorf("fxsaga: a deadline of saga %s (%s), which is not defined in this service: add it with fxsaga.Register (or Runner.Add)", st.Name, st.ID)
	}
	st.Timer = "" // the message being delivered: nothing left to cancel
	return def.expireWith(ctx, r, st)
}

// expireWith times out st, waiting at its deadline, in one transaction:
// the saga taken from Waiting, and saved to act OnTimeout's step next or
// to compensate; what follows once that committed.
func (s *Saga[C]) expireWith(ctx context.Context, r *Runner, st State) error {
	st, reason := s.fit(st) // upcast, then the shape check
	if reason != "" {
		return ignoreAside(r.setAside(ctx, st, reason))
	}
	i := st.Step
	w := s.waits[i]
	take := taken(st)
	saved, err := r.step(ctx, take, i, s.names[i], "deadline", func(ctx context.Context) (State, error) {
		if err := r.take(ctx, take); err != nil {
			return take, err
		}
		next := take
		clearWait(&next)
		if w.timeoutStep() != nil {
			next.TimedOut = append(slices.Clone(st.TimedOut), i)
		} else {
			next.Status = Compensating
			next.Error = fmt.Sprintf("step %s: no %s within %v", s.names[i], w.eventName(), w.within())
		}
		return next, nil
	})
	if errors.Is(err, errMovedOn) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fxsaga: saga %s (%s): its deadline at step %s: %w", s.name, st.ID, s.names[i], err)
	}
	r.timedOut.Add(1)
	goOn(ctx, r, s, saved, st.Timer)
	return nil
}

// goOn drives st on, from what its resume or timeout committed: after the
// commit of ctx's unit of work if it has one, at once if not. Then it
// cancels the deadline that timer names, in a transaction of its own: in
// the resuming one it would lock the scheduled table against the relay
// (MySQL found deadlocks), and it need not be anywhere in particular,
// since a deadline that outlives its wait finds the saga moved on and
// does nothing; after the steps, it delays none of them.
func goOn[C any](ctx context.Context, r *Runner, s *Saga[C], st State, timer string) {
	run := func(ctx context.Context) {
		defer r.cancelTimer(ctx, st, timer)
		r.hold(st.ID)
		defer r.release(st.ID)
		_, err := drive(ctx, r, s, st, nil)
		var waiting *Pending
		var sagaErr *Error
		switch {
		case err == nil, errors.As(err, &waiting):
		case errors.As(err, &sagaErr) && sagaErr.Status == Compensated:
			r.logger.Info("fxsaga: saga compensated", zap.String("saga", s.name), zap.String("id", st.ID), zap.Error(err))
		case errors.Is(err, ErrFenced), ctx.Err() != nil:
			// Another replica drives it, or the process stops: recovery
			// goes on with it.
		default:
			r.logger.Error("fxsaga: saga", zap.String("saga", s.name), zap.String("id", st.ID), zap.Error(err))
		}
	}
	if fxoutbox.Tx(ctx) != nil && fxoutbox.AfterCommit(ctx, run) == nil {
		return
	}
	run(ctx)
}

// cancelTimer deletes the scheduled deadline timer of st, if the outbox
// holds one, best-effort: one left behind does nothing when it comes. It
// runs under st's tenant, whose store holds the timer.
func (r *Runner) cancelTimer(ctx context.Context, st State, timer string) {
	if timer == "" {
		return
	}
	saga, id := st.Name, st.ID
	ctx = fxbus.WithTenant(ctx, st.Tenant)
	call := StepCall{
		Activity: Activity{Saga: saga, ID: id, Step: "deadline", Action: "cancel"},
		run: func(ctx context.Context) error {
			if fxoutbox.Tx(ctx) == nil {
				return nil // no outbox: no scheduled deadline
			}
			_, err := fxoutbox.Cancel(ctx, timer)
			return err
		},
	}
	if err := fxcqrs.Exec(ctx, r.m, call); err != nil {
		r.logger.Debug("fxsaga: a deadline could not be cancelled; it will find the saga moved on",
			zap.String("saga", saga), zap.String("id", id), zap.Error(err))
	}
}

func clearWait(st *State) {
	st.Awaiting, st.Key, st.Timer, st.Deadline = "", "", "", time.Time{}
}

// ignoreAside is nil for the *Error that says a saga was set aside (it is
// logged; the event or deadline that found it is done with), else err.
func ignoreAside(err error) error {
	var sagaErr *Error
	if errors.As(err, &sagaErr) && sagaErr.Status == SetAside {
		return nil
	}
	return err
}
