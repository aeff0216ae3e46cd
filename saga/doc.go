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
// Persistence: NewSQL stores sagas on PostgreSQL, MySQL/MariaDB or SQLite
// (Migrate, or Migrations for your migration tool, versioned as the
// outbox's; Module checks the version at start), writing in the outbox
// module's transaction; NewMemory is for tests. Each saga has an owner and
// a lease, renewed by every save; recovery (Recover, or Module in the
// background) claims only the sagas whose lease expired, so that several
// replicas can recover one database: the claim bumps the version, which
// fences the old owner's next save. On SQLite, run one replica.
//
// Resilience: a step's act gets a circuit breaker or a fallback the way
// any call does, by calling through the mediator a handler that has them
// (fxcqrs.Breaker, fxcqrs.AsFallback). Compensations are retried with
// backoff (Config), never replaced by a fallback.
//
// Visibility: a saga left Failed is logged at error level, kept with its
// error, and listed by SQL.Failed (Memory.Failed); every act and
// compensation is logged in the store with its outcome. The Observer sees
// each saga and each of its steps as a call (Config.Observer, Activity).
//
// A saga's definition renders as a Mermaid flowchart (Saga.Mermaid).
package fxsaga
