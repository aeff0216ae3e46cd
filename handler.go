package fxcqrs

import (
	"context"
	"iter"
)

// RequestHandler handles a request of type Req and answers with a Res.
// It is called through [Send]; a request type has exactly one handler.
//
// Register it with [AsRequestHandler] under fx or [WithRequestHandlers]
// with [New]. The mediator finds Req and Res from the Handle method when the
// handler is registered, so registration takes no type parameters.
type RequestHandler[Req, Res any] interface {
	Handle(ctx context.Context, req Req) (Res, error)
}

// CommandHandler handles a command of type Cmd that answers with nothing
// but an error. It is called through [Exec]; a command type has exactly one
// handler.
type CommandHandler[Cmd any] interface {
	Handle(ctx context.Context, cmd Cmd) error
}

// StreamHandler handles a request of type Req by yielding a sequence of
// Res items. It is called through [Stream]; a stream request type has
// exactly one handler.
//
// The events the handler emits before yielding an item are processed
// before the consumer receives that item. Yielding a non-nil error ends the
// stream with that error.
type StreamHandler[Req, Res any] interface {
	Handle(ctx context.Context, req Req) iter.Seq2[Res, error]
}

// EventHandler handles an event of type E. An event type may have any
// number of handlers, none included; they run in the order documented in
// the package overview under "Event handler order".
//
// A command handler and an event handler have the same Handle shape: which
// one a value is depends on how it is registered ([AsEventHandler] or
// [WithEventHandlers]).
type EventHandler[E any] interface {
	Handle(ctx context.Context, event E) error
}
