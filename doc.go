// Package fxcqrs is a CQRS mediator for applications built on Uber fx.
//
// Handlers for requests, commands, stream requests and events are ordinary
// types with one Handle method, built by ordinary fx constructors. A handler
// emits events as it handles its request, and the call returns once those
// events' handlers have run, under a limit or one after another: the
// model of python-cqrs's parallel event processing.
//
// This is the reference: what each name does, and the rules the mediator
// keeps. The guide, a page per concept with examples, is in the
// repository's docs folder: getting started (https://github.com/fxcqrs/fxcqrs/blob/main/docs/getting-started.md),
// the mediator (https://github.com/fxcqrs/fxcqrs/blob/main/docs/mediator.md), streaming (https://github.com/fxcqrs/fxcqrs/blob/main/docs/streaming.md),
// middleware, fallbacks and breakers (https://github.com/fxcqrs/fxcqrs/blob/main/docs/middleware.md),
// observability (https://github.com/fxcqrs/fxcqrs/blob/main/docs/observability.md),
// testing (https://github.com/fxcqrs/fxcqrs/blob/main/docs/testing.md)
// and troubleshooting (https://github.com/fxcqrs/fxcqrs/blob/main/docs/troubleshooting.md).
//
// # Handlers
//
// The kind of handler is given by its Handle method:
//
//	RequestHandler[Req, Res]  Handle(ctx, Req) (Res, error)              called by Send
//	CommandHandler[Cmd]       Handle(ctx, Cmd) error                     called by Exec
//	StreamHandler[Req, Res]   Handle(ctx, Req) iter.Seq2[Res, error]     called by Stream
//	EventHandler[E]           Handle(ctx, E) error                       run for emitted events
//
// Request, command and stream types have exactly one handler; an event type
// has any number, none included. Types match exactly: PlaceOrder and
// *PlaceOrder are different messages. Registration finds the types from the
// Handle method, once, by reflection; calls never use reflection (only
// the messages of their errors do).
//
// # With fx
//
// [Module] provides the *Mediator. Register handlers with [AsRequestHandler],
// [AsCommandHandler], [AsStreamHandler] and [AsEventHandler], and supply a
// [Config] if the defaults do not suit:
//
//	fx.New(
//		fxcqrs.Module,
//		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 3}}),
//		fxcqrs.AsCommandHandler(NewProcessOrderHandler),
//		fxcqrs.AsEventHandler(NewSendConfirmationEmail),
//		fxcqrs.AsEventHandler(NewUpdateInventory),
//	)
//
// A handler's constructor may depend on *Mediator: the module builds the
// mediator from the Config and the logger alone and registers the handlers
// afterwards, from an invoke of its own. A constructor whose result lacks a
// fitting Handle method fails fx.New and fx.ValidateApp, naming it; two
// handlers for one request type fail fx.New, naming both.
//
// # Without fx
//
// [New] builds the same mediator from options; [Mediator.Stop] drains it:
//
//	m, err := fxcqrs.New(fxcqrs.Config{},
//		fxcqrs.WithCommandHandlers(&ProcessOrderHandler{}),
//		fxcqrs.WithEventHandlers(&SendConfirmationEmail{}, &UpdateInventory{}),
//	)
//
// # Calls and events
//
// [Send], [Exec] and [Stream] call the one handler of the request's type.
// Inside any handler, event handlers included, [Emit] records an event with
// the context the handler received. Events are collected for that call
// only, so handlers can be singletons shared by concurrent calls.
//
// When the handler returns an error, its events are discarded and the error
// is returned unchanged. When it succeeds, its events are processed per
// Config.Events, and the call returns after every event, follow-ups
// included, has finished. If event handlers failed, the call returns the
// valid response together with an [*EventError] that names each failed
// event and handler. [Publish] processes one event the same way; it is how
// events from outside the process enter.
//
// # Concurrency
//
// In concurrent mode (the default) at most MaxConcurrentHandlers event
// handler invocations run at once in the whole mediator, an invocation
// being one event × one handler, shared by all concurrent calls. Slots are
// taken in emit order. An invocation waiting for a slot is a queue entry,
// not a goroutine. The caller's goroutine runs its own invocations when it
// can; helper goroutines, never more than the limit, run the rest and exit
// when there is nothing left to run.
//
// In sequential mode invocations run one after another on the caller's
// goroutine, in emit order, then handler order; follow-ups breadth first.
//
// Config{} means python-cqrs's defaults: limit 1 for Events, 10 for
// StreamEvents, concurrent. [Config.Validate] rejects negative limits and
// settings that contradict each other; a setting that merely has no effect
// (a limit beside Sequential) is accepted and logged once at info level.
//
// # Cost
//
// A call that emits nothing allocates once, the 32-byte context its handler
// runs with; Emit copies the event into a pooled buffer instead of boxing
// it; no reflection, fmt or map allocation happens per call. What that
// costs against hand-written baselines, measured, is on the performance
// page (https://github.com/fxcqrs/fxcqrs/blob/main/docs/performance.md#the-mediator).
//
// # Event handler order
//
// fx hands value groups over in random order; fxcqrs does not let that show.
// The handlers of one event run, and take slots, in the order of their full
// type names including the package path ("*example.com/orders.SendEmail").
// Handlers of the same type are ordered by the name of their fx
// constructor, then by registration order.
//
// # Events typed as interfaces
//
// An event's handlers are found by its dynamic type: Emit and Publish with
// an interface-typed event (an aggregate's []DomainEvent, or any) reach the
// handlers of the value's concrete type. A nil interface is an error. A
// handler whose event type is an interface receives every event whose type
// implements it, after the type's own handlers, interfaces ordered by full
// type name. Which handlers a type has is computed once per type. Only
// these two paths call handlers through reflection.
//
// When an emitted event's type has only a command or request handler (an
// event handler registered with AsCommandHandler: the Handle shapes are
// the same), a warning is logged once, at its first emit.
//
// # Failures
//
// A panic in any handler, on any goroutine, is recovered into a
// [*PanicError] with the stack. An invocation that never started because the
// call's context ended, or the mediator stopped, is reported in the
// [*EventError] with an error matching [ErrNotStarted] and its cause. Event
// handlers may emit follow-up events; a chain deeper than [MaxDepth] is
// stopped with [ErrMaxDepth] instead of looping forever.
//
// A call made from inside an event handler processes its events inline, on
// the handler's own goroutine and slot, so no limit (1 included) can
// deadlock it.
//
// # Streams
//
// [Stream] yields the handler's items, each once the events emitted
// before it were processed per Config.StreamEvents; an item whose events
// failed still arrives, with the [*EventError]. Its documentation has the
// rules for trailing events, a consumer that stops early and a cancelled
// context; what a stop's clean-up emits is logged when it fails and seen
// by the observer. Stream starts no goroutine.
//
// # Lifecycle
//
// Under fx, the module's OnStart hook logs what is registered and its
// OnStop hook calls [Mediator.Stop]: new calls get [ErrStopped], except calls
// made from inside a call still in flight; in-flight calls and their events
// finish within the stop context. Once it has ended, no event handler
// invocation starts in any mode: each is reported to its call as not
// started, and Stop says how many calls were still in flight.
//
// EventConfig.Background makes Send, Exec and Publish return right after the
// handler; events then run on the mediator's workers, through a bounded
// queue that makes callers wait rather than drop anything, and failures go
// to the logger and to a [BackgroundErrorHandler].
//
// # Middleware
//
// A [Middleware] wraps Send and Exec calls, Stream iterations and every
// invocation of an event handler; a [Call] tells it what it wraps: kind,
// message, handler. Register it with [AsMiddleware] or [WithMiddleware]; limit it
// with [ForKinds] and [ForMessages]; place it with [WithOrder]. Which
// middleware wraps which handler, and in which order, is decided once at
// registration: lower MiddlewareOrder outside; ties go by type name and
// then by registration order. Built in: [Logging], [Timeout] per kind, and [Retry]
// for event handlers (on the invocation's own slot; a failed attempt's
// follow-ups are dropped). Panic recovery is always on.
//
//	fxcqrs.AsMiddleware(func(log *zap.Logger) fxcqrs.Middleware { return fxcqrs.Logging(log) }),
//	fxcqrs.AsMiddleware(func() fxcqrs.Middleware { return fxcqrs.Retry(fxcqrs.RetryPolicy{Attempts: 5}) }),
//
// # Fallbacks and circuit breakers
//
// A handler can have a fallback ([AsFallback], [AsEventFallback],
// [WithFallback]) that answers when it fails with an error the fallback's
// predicate accepts ([FallbackOn]), or when its circuit breaker is open
// ([Breaker]): a dependency that is down degrades the answer instead of
// failing it. The fallback runs in the primary's place, on its slot, under
// the caller's context; the primary's events are discarded. A breaker
// fails calls fast with [ErrBreakerOpen] while its handler's dependency is
// down, and probes it again after a while. It is a middleware whose place
// ([OrderBreaker]) puts the rest of the chain inside it.
//
// # Observability
//
// An [Observer] is told when a call starts and ends and when each
// invocation is queued, starts and ends, with its duration and error; the
// context it returns at a call's start is the parent of the call's
// invocations. The module
// github.com/fxcqrs/fxcqrs/fxcqrsotel adapts it to OpenTelemetry spans and
// metrics. [Mediator.Stats] gives the counters without one.
//
// # Testing handlers
//
// [RecordEvents] gives a unit test a context that records what a handler
// emits:
//
//	ctx, rec := fxcqrs.RecordEvents(context.Background())
//	err := handler.Handle(ctx, PlaceOrder{ID: 7})
//	// rec.Events() == []any{OrderPlaced{ID: 7}}
//
// # Caveats
//
// Emit panics when its context comes from no mediator call: an event must
// never vanish silently, and a missing context is a programming error. An
// Emit made by a goroutine after its handler returned cannot join the
// finished call: it is logged at error level and counted in
// [Stats].LateEmits.
//
// A call made from inside an event handler runs its events inline on that
// handler's slot. If the handler starts goroutines that each make such a
// call, their events share that one slot's accounting: they are not counted
// against the limit separately.
//
// Handlers already running when the stop deadline passes cannot be
// interrupted; Stop reports them and returns.
package fxcqrs
