package fxcqrs

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/fxcqrs/fxcqrs/internal/deadline"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// The value groups that carry handlers and middleware to Module.
const (
	handlersGroup   = `group:"fxcqrs.handlers"`
	middlewareGroup = `group:"fxcqrs.middleware"`
)

// Module provides the application's *Mediator. It takes the handlers
// registered with [AsRequestHandler], [AsCommandHandler], [AsStreamHandler]
// and [AsEventHandler], an optional [Config] (the defaults when none is
// supplied), an optional *zap.Logger (nothing is logged when none is
// supplied), an optional [BackgroundErrorHandler], an optional [Observer],
// an optional [Forwarder] (the bus module provides one), and the
// middleware and fallbacks registered with [AsMiddleware], [AsFallback]
// and [AsEventFallback]. It provides nothing else.
//
// The mediator is built from the Config and the logger alone; the handlers
// are registered into it by an fx.Invoke inside the module. So a handler's
// constructor may depend on *Mediator without a dependency cycle. Calls
// made before that invoke ran get [ErrNotReady].
//
// Its OnStart hook logs what is registered; its OnStop hook calls
// [Mediator.Stop] with half of what is left of fx's stop deadline, so that
// the modules that stop after it (the outbox's relay) keep the rest.
var Module = fx.Module("fxcqrs",
	fx.Provide(provideMediator),
	fx.Invoke(registerHandlers),
)

type mediatorParams struct {
	fx.In

	Config                 Config                 `optional:"true"`
	Logger                 *zap.Logger            `optional:"true"`
	BackgroundErrorHandler BackgroundErrorHandler `optional:"true"`
	Observer               Observer               `optional:"true"`
	Forwarder              Forwarder              `optional:"true"`
	Lifecycle              fx.Lifecycle
}

func provideMediator(p mediatorParams) (*Mediator, error) {
	m, err := newMediator(p.Config, p.Logger, p.BackgroundErrorHandler, p.Observer, p.Forwarder)
	if err != nil {
		return nil, err
	}
	p.Lifecycle.Append(fx.Hook{OnStart: m.Start, OnStop: func(ctx context.Context) error {
		// Half of what is left of the stop deadline: the modules that
		// stop after the mediator (the outbox's relay) need the rest.
		ctx, cancel := deadline.Share(ctx, 0.5)
		defer cancel()
		return m.Stop(ctx)
	}})
	return m, nil
}

type registerParams struct {
	fx.In

	Mediator   *Mediator
	Handlers   []registration         `group:"fxcqrs.handlers"`
	Middleware []registeredMiddleware `group:"fxcqrs.middleware"`
	Fallbacks  []fallbackSpec         `group:"fxcqrs.fallbacks"`
}

func registerHandlers(p registerParams) error {
	// dig hands a group over in random order; errors must not depend on it.
	regs := slices.Clone(p.Handlers)
	slices.SortStableFunc(regs, func(a, b registration) int {
		return cmp.Or(cmp.Compare(a.role, b.role), cmp.Compare(a.source, b.source))
	})
	fallbacks := slices.Clone(p.Fallbacks)
	slices.SortStableFunc(fallbacks, func(a, b fallbackSpec) int { return cmp.Compare(a.source, b.source) })
	// Middleware is put in its documented order at registration.
	return p.Mediator.register(regs, slices.Clone(p.Middleware), fallbacks)
}

// AsMiddleware registers a middleware's constructor with fx. What it
// returns must implement [Middleware]; wrap it in [ForKinds], [ForMessages]
// or [WithOrder] inside the constructor to scope or place it. Middleware
// runs in the order documented at [Middleware], not fx's.
//
// anns are fx annotations of the constructor's parameters.
func AsMiddleware(constructor any, anns ...fx.Annotation) fx.Option {
	result, source, err := constructorResult("AsMiddleware", constructor)
	if err != nil {
		return fx.Error(err)
	}
	if !result.Implements(reflect.TypeFor[Middleware]()) {
		return fx.Error(fmt.Errorf("fxcqrs.AsMiddleware(%s): %s does not implement fxcqrs.Middleware", source, typeName(result)))
	}
	return provideMember("middleware", source, constructor, anns, middlewareGroup,
		func(mw Middleware) registeredMiddleware { return registeredMiddleware{mw: mw, source: source} })
}

// AsRequestHandler registers a request handler's constructor with fx. The
// constructor is an ordinary fx constructor (it may take any dependency,
// *Mediator included, and may return an error as its last result); what it
// returns must have a method Handle(context.Context, Req) (Res, error).
//
// anns are fx annotations of the constructor's parameters, such as
// fx.ParamTags; the result is annotated by fxcqrs.
//
// A constructor whose result has no fitting Handle fails fx.New and
// fx.ValidateApp with an error that names it and the signature it needs. A
// second handler for the same request type fails fx.New, naming both
// handlers and constructors. fx.ValidateApp cannot see that one: it runs no
// constructor, and the handler's type is known only from what its
// constructor returns, so the duplicate is found when Module registers the
// handlers, where the error can name both constructors.
func AsRequestHandler(constructor any, anns ...fx.Annotation) fx.Option {
	return asHandler(roleRequest, "AsRequestHandler", constructor, anns)
}

// AsCommandHandler registers a command handler's constructor with fx, as
// [AsRequestHandler] does; its result needs a method
// Handle(context.Context, Cmd) error.
func AsCommandHandler(constructor any, anns ...fx.Annotation) fx.Option {
	return asHandler(roleCommand, "AsCommandHandler", constructor, anns)
}

// AsStreamHandler registers a stream handler's constructor with fx, as
// [AsRequestHandler] does; its result needs a method
// Handle(context.Context, Req) iter.Seq2[Res, error].
func AsStreamHandler(constructor any, anns ...fx.Annotation) fx.Option {
	return asHandler(roleStream, "AsStreamHandler", constructor, anns)
}

// AsEventHandler registers an event handler's constructor with fx, as
// [AsRequestHandler] does; its result needs a method
// Handle(context.Context, E) error. An event type may have any number of
// handlers.
func AsEventHandler(constructor any, anns ...fx.Annotation) fx.Option {
	return asHandler(roleEvent, "AsEventHandler", constructor, anns)
}

// asHandler checks the constructor now, so that a bad one fails
// fx.ValidateApp as well as fx.New, then provides its result under a name
// of its own and relays it into the handlers group, tagged with its kind
// and constructor, which Module's invoke registers.
//
// Two handlers for one request type are found by that invoke, not by dig:
// a dig conflict would be caught by fx.ValidateApp too, but dig would name
// fx.Annotate's generated function instead of either constructor, and
// fx.New would fail with that message before the invoke could say more.
func asHandler(k role, api string, constructor any, anns []fx.Annotation) fx.Option {
	result, source, err := constructorResult(api, constructor)
	if err != nil {
		return fx.Error(err)
	}
	if _, err := inspect(k, result); err != nil {
		return fx.Error(fmt.Errorf("fxcqrs.%s(%s): %w", api, source, err))
	}
	return provideMember(k.String(), source, constructor, anns, handlersGroup,
		func(h any) registration { return registration{role: k, handler: h, source: source} })
}

// AsFallback registers with fx the constructor of a request, command or
// stream handler's fallback. Which handler it backs is found from its
// Handle method: the one of the same message type, which must have the
// same response type. A handler has at most one fallback.
//
//	fxcqrs.AsRequestHandler(NewLivePrices),
//	fxcqrs.AsFallback(NewCachedPrices, fxcqrs.FallbackOn(isUnavailable)),
func AsFallback(constructor any, opts ...FallbackOption) fx.Option {
	return asFallback("AsFallback", constructor, nil, opts)
}

// AsEventFallback registers with fx the constructor of the fallback of the
// event handlers of type Primary: an event type has many handlers, so the
// fallback names the one it backs.
//
//	fxcqrs.AsEventHandler(NewSendEmail),
//	fxcqrs.AsEventFallback[*SendEmail](NewQueueEmail),
func AsEventFallback[Primary any](constructor any, opts ...FallbackOption) fx.Option {
	return asFallback("AsEventFallback", constructor, reflect.TypeFor[Primary](), opts)
}

const fallbacksGroup = `group:"fxcqrs.fallbacks"`

func asFallback(api string, constructor any, primary reflect.Type, opts []FallbackOption) fx.Option {
	result, source, err := constructorResult(api, constructor)
	if err != nil {
		return fx.Error(err)
	}
	if _, err := fallbackShape(result, primary != nil); err != nil {
		return fx.Error(fmt.Errorf("fxcqrs.%s(%s): %w", api, source, err))
	}
	return provideMember("fallback", source, constructor, nil, fallbacksGroup,
		func(h any) fallbackSpec { return newFallbackSpec(h, source, primary, opts) })
}

// handlerSeq makes the name of each member's fx value unique.
var handlerSeq atomic.Uint64

// provideMember is how every registration helper reaches Module: it
// provides constructor's result as a V under a name of its own, then
// relays it into group as a T that says what registration needs of it
// (its role, its constructor). A value group could take the result
// directly, but then nothing would say which constructor made which
// member.
func provideMember[V, T any](kind, source string, constructor any, anns []fx.Annotation, group string, relay func(V) T) fx.Option {
	key := "fxcqrs." + kind + "." + strconv.FormatUint(handlerSeq.Add(1), 10) + ":" + source
	tag := "name:" + strconv.Quote(key)
	all := append(slices.Clip(anns), fx.As(new(V)), fx.ResultTags(tag))
	return fx.Options(
		fx.Provide(fx.Annotate(constructor, all...)),
		fx.Provide(fx.Annotate(relay, fx.ParamTags(tag), fx.ResultTags(group))),
	)
}

// constructorResult checks that constructor is an fx constructor of one
// value, optionally followed by an error, and returns that value's type and
// the constructor's name.
func constructorResult(api string, constructor any) (reflect.Type, string, error) {
	ct := reflect.TypeOf(constructor)
	if ct == nil || ct.Kind() != reflect.Func {
		return nil, "", fmt.Errorf("fxcqrs.%s: want a constructor function, got %T", api, constructor)
	}
	source := funcName(constructor)
	switch {
	case ct.NumOut() == 1 && ct.Out(0) != errorType:
	case ct.NumOut() == 2 && ct.Out(1) == errorType:
	default:
		return nil, source, fmt.Errorf("fxcqrs.%s(%s): a constructor returns one value, optionally followed by an error: got %s", api, source, ct)
	}
	return ct.Out(0), source, nil
}

func funcName(fn any) string {
	if f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()); f != nil {
		return f.Name()
	}
	return fmt.Sprintf("%T", fn)
}
