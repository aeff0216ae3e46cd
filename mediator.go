package fxcqrs

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"go.uber.org/zap"
)

// Mediator dispatches requests, commands and stream requests to their one
// handler and processes the events handlers emit. It is safe for concurrent
// use. Make one with [New], or let [Module] provide it under fx.
type Mediator struct {
	eng engine.Engine // event processing, calls in flight, frames
	cfg Config
	log *zap.Logger
	reg *registry

	onBackgroundError BackgroundErrorHandler
	obs               Observer    // nil: nothing observes, nothing is paid
	fwd               *forwarding // nil: nothing leaves the process
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
	forwarder         Forwarder
	fallbacks         []fallbackSpec
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

func withHandlers(r role, handlers []any) Option {
	return optionFunc(func(o *options) {
		for _, h := range handlers {
			o.regs = append(o.regs, registration{role: r, handler: h})
		}
	})
}

// WithRequestHandlers registers request handlers: values with a method
// Handle(context.Context, Req) (Res, error).
func WithRequestHandlers(handlers ...any) Option { return withHandlers(roleRequest, handlers) }

// WithCommandHandlers registers command handlers: values with a method
// Handle(context.Context, Cmd) error.
func WithCommandHandlers(handlers ...any) Option { return withHandlers(roleCommand, handlers) }

// WithStreamHandlers registers stream handlers: values with a method
// Handle(context.Context, Req) iter.Seq2[Res, error].
func WithStreamHandlers(handlers ...any) Option { return withHandlers(roleStream, handlers) }

// WithEventHandlers registers event handlers: values with a method
// Handle(context.Context, E) error. A command handler has the same shape;
// the option says which one a value is.
func WithEventHandlers(handlers ...any) Option { return withHandlers(roleEvent, handlers) }

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

// WithForwarder sets the mediator's Forwarder.
func WithForwarder(f Forwarder) Option {
	return optionFunc(func(o *options) { o.forwarder = f })
}

// WithFallback registers the fallback of a request, command or stream
// handler, with New. Which handler it backs is found from its Handle
// method: the one of the same message type.
func WithFallback(fallback any, opts ...FallbackOption) Option {
	s := newFallbackSpec(fallback, "", nil, opts)
	return optionFunc(func(o *options) { o.fallbacks = append(o.fallbacks, s) })
}

// WithEventFallback registers, with New, the fallback of the event
// handlers of type Primary.
func WithEventFallback[Primary any](fallback any, opts ...FallbackOption) Option {
	s := newFallbackSpec(fallback, "", reflect.TypeFor[Primary](), opts)
	return optionFunc(func(o *options) { o.fallbacks = append(o.fallbacks, s) })
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
	m, err := newMediator(cfg, o.log, o.onBackgroundError, o.observer, o.forwarder)
	if err != nil {
		return nil, err
	}
	if err := m.register(o.regs, o.middleware, o.fallbacks); err != nil {
		return nil, err
	}
	return m, nil
}

// newMediator makes a mediator that refuses calls with ErrNotReady until
// register runs.
func newMediator(cfg Config, log *zap.Logger, onBackgroundError BackgroundErrorHandler, obs Observer, fwd Forwarder) (*Mediator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("fxcqrs")
	m := &Mediator{
		cfg:               cfg,
		log:               log,
		reg:               newRegistry(),
		onBackgroundError: onBackgroundError,
		obs:               obs,
	}
	ecfg := engine.Config{
		Log:          log,
		Events:       cfg.Events.mode(DefaultMaxConcurrentEventHandlers),
		StreamEvents: cfg.StreamEvents.mode(DefaultMaxConcurrentStreamEventHandlers),
		Background:   m.backgroundFailed,
	}
	if obs != nil {
		ecfg.Reporter = reporter{m}
	}
	if fwd != nil {
		m.fwd = &forwarding{f: fwd}
		ecfg.Forward = m.fwd.forward
	}
	m.eng.Init(ecfg)
	for _, note := range cfg.unused() {
		log.Info("setting ignored: " + note)
	}
	return m, nil
}

// backgroundFailed receives the failures of a background batch. The
// BackgroundErrorHandler hears the event handlers' failures; a Forwarder's
// failures are logged with them.
func (m *Mediator) backgroundFailed(ctx context.Context, fails []engine.Failure) {
	err := eventError(fails)
	m.log.Error("background event handlers failed", zap.Error(err))
	var evErr *EventError
	if m.onBackgroundError != nil && errors.As(err, &evErr) {
		m.onBackgroundError(ctx, evErr)
	}
}

// register fills the registry and makes the mediator ready. What a call
// needs to know of its handler is decided here, once: its chain, bound;
// its fallback; whether it takes the fast path.
func (m *Mediator) register(regs []registration, mws []registeredMiddleware, fallbacks []fallbackSpec) error {
	err := m.reg.addAll(regs, mws)
	if err == nil {
		var errs []error
		for _, e := range m.reg.handlers {
			errs = append(errs, m.bindChain(e.chain, e.name, e.msgName))
		}
		for _, hs := range m.reg.events {
			for _, h := range hs {
				errs = append(errs, m.bindChain(h.chain, h.Name, h.msgName))
			}
		}
		err = errors.Join(append(errs, m.addFallbacks(fallbacks))...)
	}
	if err != nil {
		return fmt.Errorf("fxcqrs: invalid handlers: %w", err)
	}
	for _, e := range m.reg.handlers {
		e.direct = e.chain == nil && m.obs == nil && e.fallback == nil
	}
	concrete, ifaces := m.eventTable()
	m.eng.SetHandlers(concrete, ifaces, m.unhandled)
	return nil
}

// binder is middleware that keeps state per handler (the circuit
// breaker): the mediator binds it to each handler it wraps, once, at
// registration, and the handler's chain holds what bind returns.
type binder interface {
	bind(m *Mediator, handler, message string) (Middleware, error)
}

// bindChain replaces the binders of chain, a handler's, with their bound
// middleware.
func (m *Mediator) bindChain(chain []Middleware, handler, message string) error {
	var errs []error
	for i, mw := range chain {
		if b, ok := mw.(binder); ok {
			bound, err := b.bind(m, handler, message)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", handler, err))
				continue
			}
			chain[i] = bound
		}
	}
	return errors.Join(errs...)
}

// unhandled is called once for each event type that has no event handler:
// when the type has a handler of another role (an event handler registered
// with AsCommandHandler has the same Handle shape), the events it was meant
// for would vanish without a word, so it warns.
func (m *Mediator) unhandled(t reflect.Type) {
	e := m.reg.handlers[t]
	if e == nil {
		return
	}
	m.log.Warn("event has no event handler, but its type has a "+e.role.String()+" handler; was it meant to be registered as an event handler?",
		zap.String("event", typeName(t)),
		zap.String("handler", e.name),
		zap.String("registeredAs", e.role.registeredAs()),
		zap.String("constructor", e.source),
	)
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
	s := m.eng.Stats()
	return Stats{
		InFlight:     int(s.InFlight),
		LateEmits:    s.LateEmits,
		Events:       DispatchStats(s.Events),
		StreamEvents: DispatchStats(s.StreamEvents),
	}
}

// EventTypes returns the event types the mediator has handlers for,
// concrete and interface types, in no particular order. It is for modules
// that treat events by type, such as the outbox's durable delivery of
// every handled event.
func (m *Mediator) EventTypes() []reflect.Type {
	out := make([]reflect.Type, 0, len(m.reg.events))
	for t := range m.reg.events {
		out = append(out, t)
	}
	return out
}

// EventHandlers returns the names of the handlers registered for event
// type t itself (not those of interfaces it implements), in the order
// they run: the names by which a Call and the outbox's inbox know them.
// Two handlers of one type share a name.
func (m *Mediator) EventHandlers(t reflect.Type) []string {
	hs := m.reg.events[t]
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Name
	}
	return out
}
