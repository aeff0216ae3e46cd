// Package fxsaga runs sagas on an fxcqrs mediator: ordered steps over a
// typed, serialisable context, each with an action and a compensation;
// the saga's state persisted as each step completes; the completed steps
// compensated in reverse when one fails, each compensation retried with
// backoff; a saga whose compensation keeps failing left Failed, visible,
// never silently stuck. Recovery resumes unfinished sagas: forward if no
// compensation began, else compensation to the end, never acting again
// (strict backward recovery, as python-cqrs's saga has it).
//
//	s := fxsaga.Define[Order]("order", reserve, charge, ship)
//	order, err := fxsaga.Run(ctx, runner, s, Order{ID: 7})
//	var sagaErr *fxsaga.Error // which step failed, and what compensation did
//
// Each act and each compensation runs as a mediator call of its own
// (register StepHandler), so a step can Emit events and a unit of work
// such as the outbox module's wraps it: the step's writes, its routed
// events and the saga's state commit together when the store writes in the
// unit of work's transaction. Each gets a stable idempotency key
// (IdempotencyKey: the saga's id, the step, act or compensate) to pass to
// external systems, so that a step re-run after a crash is deduplicated
// downstream. Every save checks the version it read, a fencing token: an
// owner that lost the saga to another cannot write.
//
// A saga's definition renders as a Mermaid flowchart (Saga.Mermaid).
//
// This package is a first slice: the executor and an in-memory Store. The
// SQL stores on the outbox's databases, leases for several recovering
// replicas, recovery under the fx lifecycle, and the crash test are next.
package fxsaga
