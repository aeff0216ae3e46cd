package engine

import (
	"context"
	"reflect"
	"sync/atomic"

	"github.com/fxcqrs/fxcqrs/internal/typekey"
	"go.uber.org/zap"
)

// Mode is how one lane processes events: the root's EventConfig, resolved.
type Mode struct {
	Limit      int  // slots shared by every call of the lane, ≥ 1
	Sequential bool // inline, on the caller's goroutine
	Background bool // queued, the caller does not wait
	QueueSize  int  // background: invocations that may wait, ≥ 1
}

// Lane names one of the two kinds of event processing.
type Lane uint8

const (
	// Events is the processing of events emitted under Send, Exec and
	// Publish.
	Events Lane = iota
	// StreamEvents is the processing of events emitted by stream handlers.
	StreamEvents
)

// Reporter hears what the engine queues and what it never starts, for the
// root's observer. Both run on the goroutine of the call, outside any lock.
type Reporter interface {
	// Queued is called for an invocation about to wait for a slot, before
	// it can start.
	Queued(ctx context.Context, rec Record, h *Handler)
	// NotStarted is called for an invocation that will never run.
	NotStarted(ctx context.Context, rec Record, h *Handler, err error, queued bool)
}

// Config is what the root tells the engine when it makes it.
type Config struct {
	Log          *zap.Logger // not nil
	Events       Mode        // the Events lane
	StreamEvents Mode        // the StreamEvents lane
	Reporter     Reporter    // nil: nothing is reported, nothing is paid
	// Background receives the failures of background batches, which no
	// caller waits for. Not nil when Events.Background is set.
	Background func(ctx context.Context, fails []Failure)
	// Forward, when set, receives the follow-ups of every successful event
	// handler invocation before they are processed in-process: the events
	// that leave the process. Its error is reported as a Failure with
	// Forwarding set; the follow-ups are processed all the same.
	Forward func(ctx context.Context, recs []Record) error
}

// Engine processes the events of one mediator: see the package
// documentation. Make one with Init; it must not be copied.
type Engine struct {
	cfg       Config
	table     typekey.Table[[]*Handler] // concrete event types with handlers
	resolve   *resolver                 // the others
	calls     flight
	lanes     [2]lane
	bufs      owner
	aborted   atomic.Pointer[error] // set once Stop's deadline passed
	lateEmits atomic.Uint64
}

type lane struct {
	mode Mode
	d    dispatcher
}

// Init makes e an engine that refuses calls with NotReady until
// SetHandlers.
func (e *Engine) Init(cfg Config) {
	e.cfg = cfg
	e.calls.init(flightNotReady)
	e.bufs.init(e)
	e.lanes[Events] = lane{mode: cfg.Events}
	e.lanes[StreamEvents] = lane{mode: cfg.StreamEvents}
	for i := range e.lanes {
		l := &e.lanes[i]
		l.d.init(e, l.mode.Limit, l.mode.QueueSize)
	}
}

// handlers returns the handlers of rec's event type.
func (e *Engine) handlers(rec *Record) []*Handler {
	k := rec.Key()
	hs, ok := e.table.Get(k)
	if !ok {
		hs = e.resolve.handlers(k, rec)
	}
	return hs
}

// Process runs the events a call's frame f emitted (or a Publish's event),
// per lane's mode, and returns the invocations that failed or never ran.
// It returns when every invocation has run or been reported, except in
// background mode, where it returns once they are queued.
//
// The modes, cheapest first:
//   - inline (inline.go): sequential mode, and any call made from inside an
//     event handler, which runs its events on the slot its caller holds;
//   - background (background.go): queued, and nobody waits;
//   - alone (alone.go): one event with one handler, a slot free and
//     nothing queued: the caller takes the slot and runs it;
//   - queued (queue.go): the limited FIFO every call of the lane shares.
func (e *Engine) Process(f *Frame, ln Lane, events []Record) []Failure {
	l := &e.lanes[ln]
	switch {
	case f.slot || l.mode.Sequential:
		return e.runInline(f.Context, f.depth, events)
	case l.mode.Background && !InForeground(f.Context):
		return e.submit(f, &l.d, events)
	case len(events) == 1:
		if fails, ok := e.runAlone(f, &l.d, events[0]); ok {
			return fails
		}
	}
	return e.runQueued(f, &l.d, events)
}

// Admission is whether a call may enter.
type Admission uint8

const (
	// Admitted calls run.
	Admitted Admission = iota
	// RefusedNotReady calls came before SetHandlers.
	RefusedNotReady
	// RefusedStopped calls came while stopping, from outside any call in
	// flight.
	RefusedStopped
	// RefusedTooDeep calls were made at MaxDepth.
	RefusedTooDeep
)

// Enter admits a call whose handler runs with frame f, which it fills in
// with ctx as its parent. The call is in flight until Leave(f); Enter
// leaves itself when it refuses the call.
func (e *Engine) Enter(ctx context.Context, f *Frame) Admission {
	parent := FrameOf(ctx)
	f.Context = ctx
	f.buf = &e.bufs.home
	f.stripe = e.calls.stripeOf(f)
	if flags := e.calls.enter(f.stripe); flags != 0 {
		if a := e.refuse(flags, parent); a != Admitted {
			e.Leave(f)
			return a
		}
	}
	if parent != nil {
		if parent.depth >= MaxDepth {
			e.Leave(f)
			return RefusedTooDeep
		}
		f.depth = parent.depth + 1
		f.slot = parent.slot
	}
	return Admitted
}

func (e *Engine) refuse(flags int64, parent *Frame) Admission {
	if flags&flightNotReady != 0 {
		return RefusedNotReady
	}
	// Stopping: a call made from inside a call still in flight belongs to
	// it and must be able to finish.
	if parent != nil && parent.Open() && parent.Engine() == e {
		return Admitted
	}
	return RefusedStopped
}

// Leave is the other half of Enter: the call is no longer in flight.
func (e *Engine) Leave(f *Frame) { e.calls.leave(f.stripe) }

// Stop refuses new calls from now on and returns a channel closed once
// none is in flight.
func (e *Engine) Stop() <-chan struct{} { return e.calls.stop() }

// Abort is Stop's deadline passing: from now on no invocation starts, in
// any mode; each one that waited or is still to come is reported not
// started, with cause.
func (e *Engine) Abort(cause error) {
	e.aborted.Store(&cause)
	for i := range e.lanes {
		e.lanes[i].d.abort(cause)
	}
}

// abortCause is Abort's cause, or nil.
func (e *Engine) abortCause() error {
	if p := e.aborted.Load(); p != nil {
		return *p
	}
	return nil
}

// Wait waits for the engine's helper goroutines to exit.
func (e *Engine) Wait() {
	for i := range e.lanes {
		e.lanes[i].d.helpers.Wait()
	}
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	InFlight     int64     // calls in flight, background batches included
	LateEmits    uint64    // events emitted into closed frames
	Events       LaneStats // the Events lane's queue
	StreamEvents LaneStats // the StreamEvents lane's queue
}

// LaneStats counts the invocations of one lane's queue.
type LaneStats struct {
	Limit   int // slots
	Running int // invocations holding a slot
	Waiting int // invocations queued for a slot
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	return Stats{
		InFlight:     e.calls.count(),
		LateEmits:    e.lateEmits.Load(),
		Events:       e.lanes[Events].d.stats(),
		StreamEvents: e.lanes[StreamEvents].d.stats(),
	}
}

func (e *Engine) lateEmit(typ reflect.Type) {
	if e == nil {
		return // a recorder's frame
	}
	e.lateEmits.Add(1)
	e.cfg.Log.Error("event emitted after its handler returned; it is not processed",
		zap.String("event", typeName(typ)),
		zap.Stack("stack"))
}

// typeName is a type's full name with its package path; the root's
// registry names types the same way.
func typeName(t reflect.Type) string {
	if t == nil {
		return "<nil>"
	}
	if t.Name() != "" {
		if t.PkgPath() == "" {
			return t.Name()
		}
		return t.PkgPath() + "." + t.Name()
	}
	switch t.Kind() {
	case reflect.Pointer:
		return "*" + typeName(t.Elem())
	case reflect.Slice:
		return "[]" + typeName(t.Elem())
	}
	return t.String()
}

// TypeName is typeName for the root package, so both name types alike.
func TypeName(t reflect.Type) string { return typeName(t) }

// unhandled logs, at debug level, an event nobody handles.
func (e *Engine) unhandled(ev *Record) {
	if ce := e.cfg.Log.Check(zap.DebugLevel, "event has no handlers"); ce != nil {
		ce.Write(zap.String("event", typeName(ev.Type())))
	}
}

// handlerCache remembers the last event type looked up: a handler emits
// runs of one type more often than not.
type handlerCache struct {
	key typekey.Key
	hs  []*Handler
}

func (c *handlerCache) of(e *Engine, ev *Record) []*Handler {
	if k := ev.Key(); k != c.key {
		c.key = k
		c.hs = e.handlers(ev)
	}
	return c.hs
}
