// Package fxsaga runs sagas on an fxcqrs mediator: ordered steps over a
// typed, serialisable context, each with an action and a compensation;
// the saga's state persisted as each step completes; the completed steps
// compensated in reverse when one fails, each compensation retried with
// backoff; a saga whose compensation keeps failing left Failed, visible,
// never silently stuck. Recovery resumes unfinished sagas: forward if no
// compensation began, else compensation to the end, never acting again
// (strict backward recovery, as python-cqrs's saga has it).
//
// This is the reference; the guide's page is https://github.com/fxcqrs/fxcqrs/blob/main/docs/sagas.md.
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
// A saga runs outside any unit of work: inside one (a command handler
// under the outbox module), Run and Stream return [ErrInTransaction]. A
// saga with a business key ([Saga.KeyBy]) is found by it, and runs at
// most once per key at a time: a second returns an [*AlreadyStarted].
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
// Tenants: State.Tenant is fxbus.TenantOf of the call that started the
// saga. Acts, compensations, resumes and timeouts all see it as their
// context's tenant; Resumer matches a waiting saga by the event's tenant
// as well as its key; KeyBy's uniqueness holds within a tenant. Where
// tenants keep stores apart (a Tenancy, which *fxoutbox.Outbox is),
// recovery visits every store the Tenancy lists.
//
// # Sagas that wait
//
// A step made with Await waits for an event: another service's answer, a
// webhook, a person's approval. Its Wait says which event type, how the
// saga's context and the event correlate (Key, Match), how long it waits
// (Within), what the event gives the saga (Then), and what runs if the
// deadline passes first (OnTimeout; without it, the saga compensates).
//
//	fxsaga.Define[Order]("order", reserve,
//		fxsaga.Await(fxsaga.Wait[Order, PaymentConfirmed]{
//			Step:   requestPayment, // acts, and the saga waits, in one transaction
//			Key:    func(o *Order) string { return o.ID },
//			Match:  func(e PaymentConfirmed) string { return e.OrderID },
//			Within: 30 * time.Minute,
//		}),
//		ship)
//
// Run returns a *Pending once the saga waits; it holds no goroutine and
// no lease, only its row (Status Waiting, with what it waits for and
// until when: Reader.Waiting lists them). Resume[E] (or a Resumer without
// fx) makes the mediator's events of type E resume the sagas waiting for
// their correlation, on whichever replica receives them: in one
// transaction with the event's inbox record (the outbox's Config.Inbox,
// or durable delivery), Then's writes and routed events, and the saga's
// new state. The steps after it run in transactions of their own, after
// that commit (fxoutbox.AfterCommit). The deadline is a scheduled message
// of the outbox (Deadline, delivered to the DeadlineHandler), and
// recovery times out overdue sagas too, which is the only timer of a
// store without the outbox. The event and the deadline race with one
// winner: each takes the saga from Waiting by its version, in its
// transaction, and the other finds it moved on and does nothing.
//
// An event that resumes no saga (late, a duplicate under another id,
// another saga's, an unknown key) is ignored, logged at debug level and
// counted (Runner.Unmatched): events are facts that other services
// consume too, and dead-lettering each one that concerns no saga here
// would bury the letters that matter.
//
// Caveats:
//   - A Then that fails fails the event's handling: the message is retried
//     as its subscription retries, then dead-lettered, and the saga keeps
//     waiting until its deadline (a replay of the letter resumes it).
//   - A saga that waits twice for one event type and key cannot tell a
//     late duplicate of the first event (under a new message id) from the
//     second: give the second wait its own key.
//   - The saga's deadline is the runner's clock's now plus Within
//     (RunnerConfig.Now); the outbox delivers it by its own clock: give
//     both the same one.
//   - A definition changed while sagas wait (the wait moved or removed)
//     sets those sagas aside when their event or deadline comes.
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
