package fxsaga

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
)

// The definitions a runner resumes and times out.

// Definition is a saga's definition, whatever its context: *Saga[C]
// implements it, and nothing else does.
type Definition interface {
	// Name returns the saga's name.
	Name() string
	definitionError() error
	recoverWith(ctx context.Context, r *Runner) error
	awaited() []reflect.Type
	resumeWith(ctx context.Context, r *Runner, t reflect.Type, e any) (int, error)
	expireWith(ctx context.Context, r *Runner, st State) error
	contextReaches(version int) string
}

func (s *Saga[C]) definitionError() error { return s.err }

func (s *Saga[C]) recoverWith(ctx context.Context, r *Runner) error { return Recover(ctx, r, s) }

// Add makes r resume and time out the waiting sagas of each definition
// (see Await): the events and deadlines that reach r find their
// definitions here. Module adds the sagas registered with Register;
// without fx, Add each saga that waits before its events can arrive (Run
// and Recover add the one they are given, but a restarted process may
// receive an event before either ran). A definition that cannot run, or
// a second one of a name, is an error.
func (r *Runner) Add(sagas ...Definition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, s := range sagas {
		if err := s.definitionError(); err != nil {
			errs = append(errs, err)
			continue
		}
		if old, ok := r.defs[s.Name()]; ok {
			if old != s {
				errs = append(errs, fmt.Errorf("fxsaga: two sagas are named %q", s.Name()))
			}
			continue
		}
		r.defs[s.Name()] = s
		for _, t := range s.awaited() {
			r.waits[t] = append(r.waits[t], s)
		}
	}
	return errors.Join(errs...)
}

// track makes s the definition of its name that r resumes and times out,
// in place of an earlier one: Run and Recover track the definition they
// are given, so that without fx a saga's events find it.
func (r *Runner) track(s Definition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.defs[s.Name()]; ok {
		if old == s {
			return
		}
		for t, defs := range r.waits {
			r.waits[t] = slices.DeleteFunc(slices.Clone(defs), func(d Definition) bool { return d == old })
		}
	}
	r.defs[s.Name()] = s
	for _, t := range s.awaited() {
		r.waits[t] = append(r.waits[t], s)
	}
}

// Store returns the store r keeps its sagas in: Load one by the id of
// its Pending or Error.
func (r *Runner) Store() Store { return r.store }

// Unmatched counts the events that reached a Resumer and resumed no saga:
// late (the deadline won), duplicates under another id, or another saga's.
func (r *Runner) Unmatched() int64 { return r.unmatched.Load() }

func (r *Runner) definition(name string) Definition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.defs[name]
}
