package fxcqrs

import (
	"context"
	"reflect"
	"sync"

	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// Emitted returns what the current call or event handler invocation has
// emitted so far, in emit order, or nil outside one. It is for middleware
// that must see a handler's events before they are processed, such as a
// unit of work that writes them to an outbox before it commits. It changes
// nothing about what is processed, and a mediator pays nothing for it
// unless it is called.
func Emitted(ctx context.Context) []any {
	if ctx == nil {
		return nil
	}
	f := engine.FrameOf(ctx)
	if f == nil {
		return nil
	}
	return f.Events()
}

// Withdraw removes from what the current call or event handler invocation
// has emitted so far the events whose type take reports true for, and
// returns them in emit order (nil outside a call, or when none): the
// mediator neither hands them to its Forwarder nor runs their in-process
// handlers. The others keep their order. It is for middleware that
// delivers some events itself, such as a unit of work that writes them to
// a table in its transaction so that their handlers run from there, after
// the commit and after a crash. The withdrawn events are the caller's to
// deliver: withdrawing and dropping them loses them.
func Withdraw(ctx context.Context, take func(t reflect.Type) bool) []any {
	if ctx == nil {
		return nil
	}
	f := engine.FrameOf(ctx)
	if f == nil {
		return nil
	}
	return f.Withdraw(take)
}

// MarkForwarded tells the mediator that middleware has taken what the
// current call or event handler invocation emitted out of the process
// itself (a unit of work wrote the routed events to an outbox table): the
// mediator does not hand them to its Forwarder. They still run in-process.
// Call it once the handler has returned, with the context it ran under.
func MarkForwarded(ctx context.Context) {
	if ctx == nil {
		return
	}
	if f := engine.FrameOf(ctx); f != nil {
		f.MarkForwarded()
	}
}

// Forwarder takes events out of the process: the bus module's routes are
// one. The mediator hands it the events a handler emitted once the handler
// and its whole middleware chain have succeeded, and before in-process
// event handlers run them; the follow-ups of event handlers likewise, after
// each successful invocation. Events that enter through Publish are not
// handed to it again; their handlers' follow-ups are.
//
// Forward's error does not undo the call: the caller receives the valid
// response together with it (joined with any *EventError), as for failed
// event handlers, and the events still run in-process.
//
// Register one with [WithForwarder], or supply it to [Module] under fx.
type Forwarder interface {
	// Forwards reports whether events of type t leave the process. The
	// mediator asks once per type and hands Forward only those.
	Forwards(t reflect.Type) bool
	// Forward takes events out of the process, in emit order. ctx is the
	// context of the call or invocation that emitted them.
	Forward(ctx context.Context, events []any) error
}

// forwarding adapts a Forwarder to the engine: it asks Forwards once per
// event type and boxes only the events that leave.
type forwarding struct {
	f     Forwarder
	types sync.Map // typekey.Key → bool
}

func (fw *forwarding) forward(ctx context.Context, recs []engine.Record) error {
	var out []any
	for _, rec := range recs {
		if fw.leaves(rec) {
			out = append(out, rec.Event())
		}
	}
	if len(out) == 0 {
		return nil
	}
	return fw.f.Forward(ctx, out)
}

func (fw *forwarding) leaves(rec engine.Record) bool {
	k := rec.Key()
	if v, ok := fw.types.Load(k); ok {
		return v.(bool)
	}
	leaves := fw.f.Forwards(rec.Type())
	fw.types.Store(k, leaves)
	return leaves
}

// Foreground returns a context under which Send, Exec and Publish wait for
// their events, follow-ups included, even when Config.Events.Background is
// on: a message consumer that acknowledges a message only once its
// handlers ran uses it. Calls made from inside such a call inherit it.
func Foreground(ctx context.Context) context.Context {
	return engine.WithForeground(ctx)
}
