package fxcqrs

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"
)

// Kind is what a middleware or an observer sees being called.
type Kind uint8

const (
	// KindRequest is a Send.
	KindRequest Kind = iota + 1
	// KindCommand is an Exec.
	KindCommand
	// KindStream is a Stream, from the start of its iteration to its end.
	KindStream
	// KindEvent is one event handler invocation: one event × one handler.
	KindEvent
	// KindPublish is a Publish call. Observers see it; middleware wraps its
	// invocations, as KindEvent.
	KindPublish
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindCommand:
		return "command"
	case KindStream:
		return "stream"
	case KindEvent:
		return "event"
	case KindPublish:
		return "publish"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// kind is what middleware and observers see of calls to a handler in
// role r.
func (r role) kind() Kind {
	switch r {
	case roleRequest:
		return KindRequest
	case roleCommand:
		return KindCommand
	case roleStream:
		return KindStream
	}
	return KindEvent
}

// Call describes what a middleware wraps or an observer sees.
type Call struct {
	// Kind is what is called.
	Kind Kind
	// Message is the request, command, stream request or event.
	Message any
	// MessageType is Message's full type name, package path included, or,
	// for a request, command or stream request whose type has a method
	// CallName() string, what that returns: a message that stands for
	// many (the saga module's steps) names each call for logs and spans.
	MessageType string
	// Handler is the handler's full type name, or the name it gives itself
	// (NamedHandler: EventFunc, CommandFunc, RequestFunc); empty for
	// KindPublish.
	Handler string
}

// callNamer is a request, command or stream request type that names its
// calls; see Call.MessageType.
type callNamer interface{ CallName() string }

// Next calls the rest of the chain and, at its end, the handler. It
// returns the handler's response for KindRequest, nil otherwise. The
// context it is given is the one the handler receives; it must derive from
// the context the middleware received, or the handler cannot Emit.
type Next func(ctx context.Context) (any, error)

// Middleware wraps Send and Exec calls, Stream iterations and each event
// handler invocation. For KindRequest the value it returns is the response
// Send returns; it may answer without calling next (a cache), but the value
// must then be of the handler's response type.
//
// Middleware runs in a deterministic order, whatever order fx hands it
// over in: by MiddlewareOrder (see [WithOrder]; 0 when not set), lowest
// outermost, then by type name, then by registration order. A panic in a
// middleware or a handler is recovered into a *PanicError: recovery is
// always on, innermost and outermost.
//
// Which calls a middleware wraps is decided once, at registration ([ForKinds],
// [ForMessages]); a call that no middleware wraps pays nothing for the
// feature.
type Middleware interface {
	// Handle wraps call: it calls next to go on (or answers itself) and
	// returns what the caller, or the middleware outside it, receives.
	Handle(ctx context.Context, call Call, next Next) (any, error)
}

// MiddlewareFunc adapts a function to a Middleware.
type MiddlewareFunc func(ctx context.Context, call Call, next Next) (any, error)

// Handle calls f.
func (f MiddlewareFunc) Handle(ctx context.Context, call Call, next Next) (any, error) {
	return f(ctx, call, next)
}

// orderer is implemented by middleware with a position; see WithOrder.
type orderer interface {
	MiddlewareOrder() int
}

// scoper is implemented by middleware limited to some calls.
type scoper interface {
	appliesTo(k Kind, message reflect.Type) bool
}

// scoped is a middleware that WithOrder, ForKinds or ForMessages placed
// or limited. It only matters at registration: a handler's chain holds
// what it wraps (see unwrap).
type scoped struct {
	Middleware
	order   *int
	kinds   []Kind
	message []reflect.Type
}

func (w *scoped) MiddlewareOrder() int {
	if w.order != nil {
		return *w.order
	}
	return orderOf(w.Middleware)
}

func (w *scoped) appliesTo(k Kind, message reflect.Type) bool {
	if w.kinds != nil && !slices.Contains(w.kinds, k) {
		return false
	}
	if w.message != nil && !slices.Contains(w.message, message) {
		return false
	}
	if s, ok := w.Middleware.(scoper); ok {
		return s.appliesTo(k, message)
	}
	return true
}

// WithOrder sets mw's position: lower runs outside higher. Middleware
// without a position has order 0. The built-ins have OrderLogging,
// OrderTimeout and OrderRetry.
func WithOrder(mw Middleware, order int) Middleware {
	return &scoped{Middleware: mw, order: &order}
}

// ForKinds limits mw to calls of the given kinds.
func ForKinds(mw Middleware, kinds ...Kind) Middleware {
	return &scoped{Middleware: mw, kinds: slices.Clip(kinds)}
}

// ForMessages limits mw to calls whose message has one of the given types,
// matched exactly like handlers are (T and *T differ):
//
//	fxcqrs.ForMessages(audit, reflect.TypeFor[PlaceOrder](), reflect.TypeFor[CancelOrder]())
func ForMessages(mw Middleware, types ...reflect.Type) Middleware {
	return &scoped{Middleware: mw, message: slices.Clip(types)}
}

func orderOf(mw Middleware) int {
	if o, ok := mw.(orderer); ok {
		return o.MiddlewareOrder()
	}
	return 0
}

func appliesTo(mw Middleware, k Kind, message reflect.Type) bool {
	if s, ok := mw.(scoper); ok {
		return s.appliesTo(k, message)
	}
	return true
}

// registeredMiddleware is a middleware with what orders it.
type registeredMiddleware struct {
	mw     Middleware
	name   string
	source string
	seq    int
}

// sortMiddleware puts middleware in its documented order.
func sortMiddleware(mws []registeredMiddleware) {
	slices.SortStableFunc(mws, func(a, b registeredMiddleware) int {
		return cmp.Or(
			cmp.Compare(orderOf(a.mw), orderOf(b.mw)),
			cmp.Compare(a.name, b.name),
			cmp.Compare(a.source, b.source),
			cmp.Compare(a.seq, b.seq),
		)
	})
}

// chainFor returns the middleware that wraps calls of kind k on message,
// in order, unwrapped; nil when none does.
func chainFor(mws []registeredMiddleware, k Kind, message reflect.Type) []Middleware {
	var chain []Middleware
	for _, r := range mws {
		if appliesTo(r.mw, k, message) {
			chain = append(chain, unwrap(r.mw))
		}
	}
	return chain
}

// unwrap sees through WithOrder, ForKinds and ForMessages to the
// middleware they place or limit.
func unwrap(mw Middleware) Middleware {
	for {
		w, ok := mw.(*scoped)
		if !ok {
			return mw
		}
		mw = w.Middleware
	}
}

// middlewareName names a middleware by its type.
func middlewareName(mw Middleware) string { return typeName(reflect.TypeOf(unwrap(mw))) }

// callEnder is middleware that also reports a call once its caller's
// result, events included, is known. The mediator calls it after the
// call's events ran.
type callEnder interface {
	callEnded(ctx context.Context, call Call, err error, elapsed time.Duration)
}

// endersOf returns the members of chain, unwrapped, that are callEnders.
func endersOf(chain []Middleware) []callEnder {
	var enders []callEnder
	for _, mw := range chain {
		if c, ok := mw.(callEnder); ok {
			enders = append(enders, c)
		}
	}
	return enders
}

// runChain runs chain around last. Panics anywhere in it become a
// *PanicError.
func runChain(ctx context.Context, chain []Middleware, call Call, last Next) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, newPanicError(r)
		}
	}()
	return nextOf(chain, call, last)(ctx)
}

func nextOf(chain []Middleware, call Call, last Next) Next {
	if len(chain) == 0 {
		return last
	}
	return func(ctx context.Context) (any, error) {
		return chain[0].Handle(ctx, call, nextOf(chain[1:], call, last))
	}
}
