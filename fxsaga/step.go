package fxsaga

import (
	"context"
	"errors"
	"strconv"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"go.uber.org/zap"
)

// StepHandler runs the saga's steps as commands: register it with the
// mediator (Module does under fx).
type StepHandler struct{}

var _ fxcqrs.CommandHandler[StepCall] = StepHandler{}

// Handle runs the step.
func (StepHandler) Handle(ctx context.Context, c StepCall) error {
	if c.run == nil {
		return errors.New("fxsaga: StepHandler: a StepCall that no Runner made has nothing to run")
	}
	return c.run(ctx)
}

// StepCall is one act or compensation of a saga's step, run as a command
// of the mediator so that it can Emit and a unit of work (the outbox's)
// wraps it: what StepHandler handles. Only a Runner makes one. Logs and
// spans name it by its Activity.
type StepCall struct {
	Activity
	run func(ctx context.Context) error
}

// CallName names the step's call in logs and spans: "saga order: Charge
// act".
func (c StepCall) CallName() string { return c.name() }

// SagaActivity is the act or compensation this call runs, for observers.
func (c StepCall) SagaActivity() Activity { return c.Activity }

// step runs one act or compensation as a mediator call, and saves the
// state work returns (its version bumped) in the step's transaction: the
// step's writes, the saga's state and the log's entry commit together. A
// failure is logged after the transaction rolled back. It returns the
// state saved.
func (r *Runner) step(ctx context.Context, st State, i int, name, action string, work func(context.Context) (State, error)) (State, error) {
	var saved State
	call := StepCall{
		Activity: Activity{Saga: st.Name, ID: st.ID, Step: name, Action: action},
		run: func(ctx context.Context) error {
			next, err := work(ctx)
			if err != nil {
				return err
			}
			next.Version = st.Version + 1
			if err := r.store.Save(ctx, next); err != nil {
				return err
			}
			saved = next
			return r.store.Log(ctx, Entry{SagaID: st.ID, Step: i, Action: action, At: r.now()})
		},
	}
	key := st.ID + ":" + strconv.Itoa(i) + ":" + action
	ctx = fxbus.WithTenant(ctx, st.Tenant) // the saga's, whatever drives it: its unit of work opens on the tenant's store
	err := fxcqrs.Exec(context.WithValue(ctx, keyCtx{}, key), r.m, call)
	var evErr *fxcqrs.EventError
	if errors.As(err, &evErr) {
		err = nil // the step's own work committed; its events' failures are theirs
	}
	// A stop is no failure of the step's; nor is a tenant's store not
	// served now, where nothing could be logged.
	if err != nil && !errors.Is(err, errMovedOn) && ctx.Err() == nil && !r.storeless(st.Tenant, err) {
		failure := Entry{SagaID: st.ID, Step: i, Action: action, Err: err.Error(), At: r.now()}
		if logErr := r.within(ctx, st.Tenant, func(ctx context.Context) error { return r.store.Log(ctx, failure) }); logErr != nil {
			r.logger.Warn("fxsaga: the step's failure could not be logged", zap.String("saga", st.ID), zap.Error(logErr))
		}
	}
	return saved, err
}
