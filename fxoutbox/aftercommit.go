package fxoutbox

import "context"

// AfterCommit arranges for fn to run once the unit of work of ctx has
// committed, on the goroutine that committed it, before the call that
// began the unit of work returns; if it rolls back, fn never runs. fn gets
// a context outside that unit of work: the calls it makes through the
// mediator are units of work of their own, not joined to the one that
// committed, and not taken for redeliveries of the inbound message that
// began it (the inbox records none of them under its id). It keeps the
// rest of ctx: cancellation, the mediator's call, the message's
// correlation.
//
// It is what fxsaga uses to go on with a saga's next steps once the step
// that resumed it has committed. A crash after the commit and before fn
// ran or finished loses fn: use it for work that something else recovers
// (the saga's recovery, here), never as the only record of work to do.
//
// It returns ErrNoUnitOfWork outside a unit of work.
func AfterCommit(ctx context.Context, fn func(ctx context.Context)) error {
	un := unitOf(ctx)
	if un == nil {
		return ErrNoUnitOfWork
	}
	un.after = append(un.after, fn)
	return nil
}

// afterKey marks a context given to an AfterCommit function: the unit of
// work records nothing in the inbox under it.
type afterKey struct{}

// runAfter runs the functions un's commit was waiting for.
func (un *unit) runAfter(ctx context.Context) {
	if len(un.after) == 0 {
		return
	}
	ctx = context.WithValue(context.WithValue(ctx, txKey{}, (*unit)(nil)), afterKey{}, true)
	for _, fn := range un.after {
		fn(ctx)
	}
}
