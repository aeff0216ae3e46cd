package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Mediator dispatches requests, commands and stream requests to their one
// handler and processes the events handlers emit. It is safe for concurrent
// use. Make one with [New], or let [Module] provide it under fx.
type Mediator struct {
	cfg Config
	log *zap.Logger
	reg *registry

	calls flight // in flight, and whether new ones are refused

	events  *dispatcher // Config.Events, concurrent modes
	streams *dispatcher // Config.StreamEvents, concurrent mode

	onBackgroundError BackgroundErrorHandler
	obs               Observer // nil: nothing observes, nothing is paid
	lateEmits         atomic.Uint64
	bufs              bufOwner // its frames' event buffers
}

// BackgroundErrorHandler receives the failures of events processed in
// background mode (EventConfig.Background), which no caller is waiting for.
// It is called after they are logged, on a mediator worker goroutine; it
// must not block for long. Under fx, supply one with fx.Supply or
// fx.Provide and Module passes it to the mediator.
type BackgroundErrorHandler func(ctx context.Context, err *EventError)

// Option configures a Mediator made by New.
type Option interface {
	apply(*options)
}

type options struct {
	regs              []registration
	middleware        []registeredMiddleware
	log               *zap.Logger
	onBackgroundError BackgroundErrorHandler
	observer          Observer
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

func withHandlers(k kind, handlers []any) Option {
	return optionFunc(func(o *options) {
		for _, h := range handlers {
			o.regs = append(o.regs, registration{kind: k, handler: h})
		}
	})
}

// WithRequestHandlers registers request handlers: values with a method
// Handle(context.Context, Req) (Res, error).
func WithRequestHandlers(handlers ...any) Option { return withHandlers(kindRequest, handlers) }

// WithCommandHandlers registers command handlers: values with a method
// Handle(context.Context, Cmd) error.
func WithCommandHandlers(handlers ...any) Option { return withHandlers(kindCommand, handlers) }

// WithStreamHandlers registers stream handlers: values with a method
// Handle(context.Context, Req) iter.Seq2[Res, error].
func WithStreamHandlers(handlers ...any) Option { return withHandlers(kindStream, handlers) }

// WithEventHandlers registers event handlers: values with a method
// Handle(context.Context, E) error. A command handler has the same shape;
// the option says which one a value is.
func WithEventHandlers(handlers ...any) Option { return withHandlers(kindEvent, handlers) }

// WithLogger sets the logger. Without it the mediator logs nothing.
func WithLogger(l *zap.Logger) Option {
	return optionFunc(func(o *options) { o.log = l })
}

// WithBackgroundErrorHandler sets what receives the failures of background
// event processing, besides the logger.
func WithBackgroundErrorHandler(h BackgroundErrorHandler) Option {
	return optionFunc(func(o *options) { o.onBackgroundError = h })
}

// WithMiddleware adds middleware. Its order is not the order given here
// but the documented one: see [Middleware].
func WithMiddleware(mws ...Middleware) Option {
	return optionFunc(func(o *options) {
		for _, mw := range mws {
			o.middleware = append(o.middleware, registeredMiddleware{mw: mw})
		}
	})
}

// WithObserver sets the mediator's observer.
func WithObserver(obs Observer) Option {
	return optionFunc(func(o *options) { o.observer = obs })
}

// New returns a mediator with the given handlers, ready for calls. It
// reports every problem at once: an invalid Config, a handler without a
// fitting Handle method, two handlers for one request type.
//
// A mediator from New needs no Start: it starts no goroutine until events
// need one, and its workers exit when idle. Call [Mediator.Stop] to refuse
// new calls and wait for those in flight (background events included).
func New(cfg Config, opts ...Option) (*Mediator, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	m, err := newMediator(cfg, o.log, o.onBackgroundError, o.observer)
	if err != nil {
		return nil, err
	}
	if err := m.register(o.regs, o.middleware); err != nil {
		return nil, err
	}
	return m, nil
}

// newMediator makes a mediator that refuses calls with ErrNotReady until
// register runs.
func newMediator(cfg Config, log *zap.Logger, onBackgroundError BackgroundErrorHandler, obs Observer) (*Mediator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	m := &Mediator{
		cfg:               cfg,
		log:               log,
		reg:               newRegistry(),
		onBackgroundError: onBackgroundError,
		obs:               obs,
	}
	m.calls.init(flightNotReady)
	m.bufs.init(m)
	m.events = newDispatcher(m, cfg.Events.limit(DefaultMaxConcurrentEventHandlers), cfg.Events.queueSize())
	m.streams = newDispatcher(m, cfg.StreamEvents.limit(DefaultMaxConcurrentStreamEventHandlers), 0)
	return m, nil
}

// register fills the registry and makes the mediator ready.
func (m *Mediator) register(regs []registration, mws []registeredMiddleware) error {
	if err := m.reg.addAll(regs, mws); err != nil {
		return fmt.Errorf("fxcqrs: invalid handlers: %w", err)
	}
	m.calls.clear(flightNotReady)
	return nil
}

// Stats is a snapshot of a mediator's counters.
type Stats struct {
	// InFlight is the number of calls in flight, background event batches
	// included.
	InFlight int
	// LateEmits counts events emitted after their handler returned, which
	// were logged and not processed.
	LateEmits uint64
	// Events is the concurrent processing of Config.Events.
	Events DispatchStats
	// StreamEvents is the concurrent processing of Config.StreamEvents.
	StreamEvents DispatchStats
}

// DispatchStats counts the event handler invocations of one concurrent
// dispatcher. Sequential and nested processing run inline and are not
// counted here.
type DispatchStats struct {
	// Limit is the effective MaxConcurrentHandlers.
	Limit int
	// Running is the number of invocations holding a slot.
	Running int
	// Waiting is the number of invocations queued for a slot.
	Waiting int
}

// Stats returns a snapshot of the mediator's counters.
func (m *Mediator) Stats() Stats {
	return Stats{
		InFlight:     int(m.calls.count()),
		LateEmits:    m.lateEmits.Load(),
		Events:       m.events.stats(),
		StreamEvents: m.streams.stats(),
	}
}

// begin admits a call whose handler runs with frame f, which it fills in.
// The call is in flight until end(f); begin ends it itself when it returns
// an error.
func (m *Mediator) begin(ctx context.Context, api string, f *frame) error {
	if m == nil {
		return errors.New("fxcqrs." + api + ": nil *Mediator")
	}
	if ctx == nil {
		return errors.New("fxcqrs." + api + ": nil context")
	}
	parent := frameOf(ctx)
	f.Context = ctx
	f.buf = &m.bufs.home
	f.stripe = m.calls.stripeOf(f)
	if flags := m.calls.enter(f.stripe); flags != 0 {
		if err := m.refuse(flags, parent); err != nil {
			m.end(f)
			return fmt.Errorf("fxcqrs.%s: %w", api, err)
		}
	}
	if parent != nil {
		if parent.depth >= MaxDepth {
			m.end(f)
			return fmt.Errorf("fxcqrs.%s: %w (%d)", api, ErrMaxDepth, MaxDepth)
		}
		f.depth = parent.depth + 1
		f.slot = parent.slot
	}
	return nil
}

func (m *Mediator) refuse(flags int64, parent *frame) error {
	if flags&flightNotReady != 0 {
		return ErrNotReady
	}
	// Stopping: a call made from inside a call still in flight belongs to
	// it and must be able to finish.
	if parent != nil && parent.open() && parent.mediator() == m {
		return nil
	}
	return ErrStopped
}

// end is the other half of begin.
func (m *Mediator) end(f *frame) { m.calls.leave(f.stripe) }

// lookup admits a call and finds the handler of T. The frame it returns
// is the one allocation of a call that emits nothing.
func lookup[T any](ctx context.Context, m *Mediator, k kind, api string) (*handlerEntry, *frame, error) {
	f := new(frame)
	if err := m.begin(ctx, api, f); err != nil {
		return nil, nil, err
	}
	e, _ := m.reg.handlerTable.get(keyOf[T]())
	if e == nil || e.kind != k {
		m.end(f)
		return nil, nil, m.noHandler(reflect.TypeFor[T](), api)
	}
	return e, f, nil
}

func (m *Mediator) noHandler(typ reflect.Type, api string) error {
	if e := m.reg.handlers[typ]; e != nil {
		use := map[kind]string{kindRequest: "Send", kindCommand: "Exec", kindStream: "Stream"}[e.kind]
		return fmt.Errorf("fxcqrs.%s: %w for %s: it has a %s handler (%s); call %s", api, ErrNoHandler, typeName(typ), e.kind, e.name, use)
	}
	// The commonest slip: a pointer sent for a value type, or the reverse.
	var alt reflect.Type
	if typ.Kind() == reflect.Pointer {
		alt = typ.Elem()
	} else {
		alt = reflect.PointerTo(typ)
	}
	if other := m.reg.handlers[alt]; other != nil {
		return fmt.Errorf("fxcqrs.%s: %w for %s (%s has one: types match exactly)", api, ErrNoHandler, typeName(typ), typeName(alt))
	}
	return fmt.Errorf("fxcqrs.%s: %w for %s", api, ErrNoHandler, typeName(typ))
}

// typedHandler returns e's handler as an H. Asserting to a generic
// interface looks its itab up on every call, so the first successful
// assertion is kept on the entry; a call asking for another H (a wrong
// response type) misses the cache and fails the assertion.
func typedHandler[H any](e *handlerEntry) (H, bool) {
	if p, ok := e.typed.Load().(*H); ok {
		return *p, true
	}
	h, ok := e.handler.(H)
	if ok {
		e.typed.Store(&h)
	}
	return h, ok
}

func (e *handlerEntry) wrongResult(api string, asked reflect.Type) error {
	return fmt.Errorf("fxcqrs.%s: the handler of %s (%s) returns %s, not %s", api, typeName(e.message), e.name, typeName(e.result), typeName(asked))
}

func errNilRequest(api string, typ reflect.Type) error {
	return fmt.Errorf("fxcqrs.%s: nil %s request", api, typeName(typ))
}

func errHandlerMismatch(handler any, msg reflect.Type) error {
	return fmt.Errorf("fxcqrs: internal error: %T does not handle %s", handler, typeName(msg))
}

// isNil reports whether a request of a pointer or interface type is nil.
// Only called for such types (handlerEntry.nilable), so boxing does not
// allocate.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// finish ends a Send or Exec whose handler succeeded: the events it
// emitted are processed per Config.Events.
func (m *Mediator) finish(f *frame) error {
	err := m.settle(f, &m.cfg.Events, m.events)
	m.end(f)
	return err
}

// discard ends a call whose handler failed: its events go with it.
func (m *Mediator) discard(f *frame) {
	f.seal().release()
	m.end(f)
}

func newPanicError(v any) *PanicError {
	return &PanicError{Value: v, Stack: debug.Stack()}
}

// Send sends req to its request handler and returns the handler's
// response, after every event the handler emitted (follow-ups included)
// has been processed per Config.Events.
//
// Res must be given; Req is inferred:
//
//	receipt, err := fxcqrs.Send[Receipt](ctx, m, PlaceOrder{ID: 7})
//
// Errors: ErrNoHandler when no request handler is registered for Req's
// exact type; an error naming the handler's response type when it is not
// Res; the handler's own error unchanged (its events are discarded); a
// *PanicError when it panicked; and, beside a valid response, an
// *EventError when event handlers failed.
func Send[Res, Req any](ctx context.Context, m *Mediator, req Req) (Res, error) {
	var zero Res
	e, f, err := lookup[Req](ctx, m, kindRequest, "Send")
	if err != nil {
		return zero, err
	}
	h, ok := typedHandler[RequestHandler[Req, Res]](e)
	if !ok {
		m.end(f)
		return zero, e.wrongResult("Send", reflect.TypeFor[Res]())
	}
	if e.nilable && isNil(req) {
		m.end(f)
		return zero, errNilRequest("Send", e.message)
	}
	if e.chain != nil || m.obs != nil {
		return sendSlow(m, e, h, f, req)
	}
	res, err := handleRequest(f, h, req)
	if err != nil {
		m.discard(f)
		return zero, err
	}
	return res, m.finish(f)
}

func handleRequest[Req, Res any](ctx context.Context, h RequestHandler[Req, Res], req Req) (res Res, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newPanicError(r)
		}
	}()
	return h.Handle(ctx, req)
}

// Exec sends cmd to its command handler and returns after every event the
// handler emitted (follow-ups included) has been processed per
// Config.Events. Its errors are those of [Send].
func Exec[Cmd any](ctx context.Context, m *Mediator, cmd Cmd) error {
	e, f, err := lookup[Cmd](ctx, m, kindCommand, "Exec")
	if err != nil {
		return err
	}
	h, ok := typedHandler[CommandHandler[Cmd]](e)
	if !ok {
		m.end(f)
		return errHandlerMismatch(e.handler, e.message)
	}
	if e.nilable && isNil(cmd) {
		m.end(f)
		return errNilRequest("Exec", e.message)
	}
	if e.chain != nil || m.obs != nil {
		return execSlow(m, e, h, f, cmd)
	}
	if err := handleCommand(f, h, cmd); err != nil {
		m.discard(f)
		return err
	}
	return m.finish(f)
}

func handleCommand[Cmd any](ctx context.Context, h CommandHandler[Cmd], cmd Cmd) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = newPanicError(r)
		}
	}()
	return h.Handle(ctx, cmd)
}

// Publish processes event as if a handler had emitted it: every handler of
// E runs per Config.Events, follow-ups included, and Publish returns when
// they are done, with an *EventError naming each failure. It is how events
// from outside the process (a message broker's consumer) enter. An event
// type without handlers is not an error.
func Publish[E any](ctx context.Context, m *Mediator, event E) error {
	// The frame only carries the context, depth and slot of the call: no
	// handler receives it, so it stays on the stack.
	var pf frame
	f := &pf
	if err := m.begin(ctx, "Publish", f); err != nil {
		return err
	}
	events := [1]eventRecord{{value: &event, kind: eventOf[E]{}}}
	var (
		call  Call
		start time.Time
	)
	if m.obs != nil {
		call = Call{Kind: KindPublish, Message: event, MessageType: typeName(reflect.TypeFor[E]())}
		start = m.callStarted(f, call)
	}
	err := m.process(f, &m.cfg.Events, m.events, events[:])
	m.callFinished(f, call, err, start)
	m.end(f)
	return err
}
