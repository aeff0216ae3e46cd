package fxcqrs

import (
	"cmp"
	"context"
	"iter"

	"github.com/fxcqrs/fxcqrs/internal/engine"
	"go.uber.org/zap"
)

// Stream returns the items of req's stream handler as a sequence. The call
// is made when iteration starts, not when Stream returns: lifecycle checks
// (ErrStopped) and the handler lookup happen then, and their errors come as
// the sequence's only element.
//
// The events the handler emits before yielding an item are processed per
// Config.StreamEvents before the item reaches the consumer; the events it
// emits after its last item are processed before the sequence ends. When an
// item's events fail, the consumer receives the item together with an
// *EventError: the item is valid and not lost. When the events emitted
// after the last item fail, a final (zero, *EventError) element reports
// them.
//
// A handler that yields a non-nil error ends the sequence with that error;
// its events emitted since the previous item are discarded with it. A
// panicking handler ends it with a *PanicError. A consumer that stops early
// stops the handler (its yield returns false); the events the handler
// emits after that (a clean-up, an audit record) are processed before the
// consumer's loop ends, and their failures, which no consumer can receive,
// are logged. A cancelled context ends the sequence with the context's
// error. Stream starts no goroutine of its own.
//
//	for item, err := range fxcqrs.Stream[Price](ctx, m, WatchPrices{Symbol: "X"}) {
//		if err != nil { ... }
//	}
func Stream[Res, Req any](ctx context.Context, m *Mediator, req Req) iter.Seq2[Res, error] {
	return func(yield func(Res, error) bool) {
		var zero Res
		e, h, f, err := open[Req, StreamHandler[Req, Res]](ctx, m, roleStream, "Stream", &req)
		if err != nil {
			yield(zero, err)
			return
		}
		s := streamCall[Req, Res]{m: m, f: f, ctx: f, yield: yield, e: e}
		// Deferred: the consumer's loop body may panic through us.
		defer s.end()
		if e.direct {
			s.run(h, req)
			return
		}
		var (
			o    *observation
			call Call
		)
		if e.chain != nil || m.obs != nil {
			call = e.callOf(req)
			o = m.observeCall(f, e, call)
		}
		if e.chain == nil {
			s.run(h, req)
		} else {
			_, err = runChain(f, e.chain, call, func(ctx context.Context) (any, error) {
				s.ctx = ctx
				s.run(h, req)
				// What the chain hears: a failure the fallback is to answer
				// (which no consumer received) or the last error delivered.
				return nil, cmp.Or(s.cause, s.lastErr)
			})
			if err != nil && s.cause == nil && !s.stopped { // the middleware's own error (an open breaker's)
				if s.mayFallBack(err) {
					s.cause = err
				} else {
					s.deliver(zero, err, true)
				}
			}
		}
		if s.cause != nil {
			s.fallBack(req, o)
		}
		if o != nil {
			o.finish(f, s.lastErr)
		}
	}
}

// fallBack runs the fallback, under the caller's context, when the
// primary failed before its first item (or its breaker is open) in a way
// the fallback answers for; otherwise the consumer receives the cause.
func (s *streamCall[Req, Res]) fallBack(req Req, o *observation) {
	var zero Res
	if !s.e.fallback.answers(s.f, s.cause) {
		s.deliver(zero, s.cause, true)
		return
	}
	used := s.e.fallback.takeOver(s.m, s.e.name, s.cause)
	if o != nil {
		o.fallback = used
	}
	s.ctx, s.failed, s.cause = s.f, false, nil
	s.run(typedFallback[StreamHandler[Req, Res]](s.e.fallback), req)
}

// streamCall is one iteration of a Stream.
type streamCall[Req, Res any] struct {
	m          *Mediator
	f          *engine.Frame
	ctx        context.Context // what the handler runs with: f, or derived from it by middleware
	yield      func(Res, error) bool
	lastErr    error // the last error delivered
	stopped    bool  // the sequence ended: nothing more reaches the consumer
	failed     bool  // the handler yielded an error or panicked: its events go with it
	inConsumer bool  // the consumer's loop body is running
	items      int   // items delivered

	e     *handlerEntry // the handler's: its fallback, if any, and its name
	cause error         // why the fallback is to run: the primary failed before its first item
}

func (s *streamCall[Req, Res]) run(h StreamHandler[Req, Res], req Req) {
	var zero Res
	if s.iterate(h, req); s.stopped || s.cause != nil {
		return // a consumer that stopped, a handler error or a panic: no trailing events
	}
	// The handler returned: its trailing events run before the end.
	if err := s.events(s.f.Seal()); err != nil {
		s.deliver(zero, err, true)
	}
}

// iterate ranges over the handler's sequence. A handler panic is delivered
// as a final element, so it leaves the call stopped.
func (s *streamCall[Req, Res]) iterate(h StreamHandler[Req, Res], req Req) {
	var zero Res
	defer func() {
		if r := recover(); r != nil {
			if s.inConsumer {
				panic(r) // the consumer's own panic is not ours to turn into an item
			}
			s.failed = true
			s.f.Take().Release() // the handler failed: its pending events go with it
			perr := newPanicError(r)
			if s.mayFallBack(perr) {
				s.cause = perr
				return
			}
			if s.stopped {
				// Typically a handler that kept yielding after the
				// consumer stopped: nobody is left to receive it.
				s.m.log.Error("stream handler panicked after its stream ended", zap.Any("panic", r))
				return
			}
			s.deliver(zero, perr, true)
		}
	}()
	seq := h.Handle(s.ctx, req)
	if seq == nil {
		return
	}
	ctx := s.ctx
	for item, err := range seq {
		if s.stopped {
			// The handler ignored a false yield; the runtime would panic. Stop
			// iterating and deliver nothing more.
			break
		}
		if err != nil {
			s.failed = true
			s.f.Take().Release()
			if s.mayFallBack(err) {
				s.cause = err // not delivered: the fallback answers instead
				break
			}
			s.deliver(zero, err, true)
			break
		}
		evErr := s.events(s.f.Take())
		s.items++
		if !s.deliver(item, evErr, false) {
			break
		}
		if err := ctx.Err(); err != nil {
			s.deliver(zero, err, true)
			break
		}
	}
}

// mayFallBack reports whether the primary's err, before any item, is for
// its fallback to answer.
func (s *streamCall[Req, Res]) mayFallBack(err error) bool {
	return s.items == 0 && !s.stopped && s.e.fallback.answers(s.f, err)
}

// deliver hands one element to the consumer and reports whether it wants
// more; after a final element nothing more is delivered.
func (s *streamCall[Req, Res]) deliver(item Res, err error, final bool) bool {
	if s.stopped {
		return false
	}
	if err != nil {
		s.lastErr = err
	}
	s.inConsumer = true
	more := s.yield(item, err)
	s.inConsumer = false
	if !more || final {
		s.stopped = true
		return false
	}
	return true
}

// events processes what the handler emitted since the previous item.
func (s *streamCall[Req, Res]) events(buf *engine.Buffer) error {
	if buf == nil {
		return nil
	}
	return s.m.process(s.f, engine.StreamEvents, buf)
}

// end ends the stream's call. What the frame still holds was emitted
// after the consumer stopped (a clean-up, an audit record): it is
// processed before the consumer's loop ends, and its failures, which no
// consumer can receive, are logged (the observer sees them as any). A
// handler that failed takes its events with it.
func (s *streamCall[Req, Res]) end() {
	buf := s.f.Seal()
	if s.failed {
		buf.Release()
	} else if err := s.events(buf); err != nil {
		s.m.log.Error("stream events emitted after the consumer stopped failed", zap.Error(err))
	}
	s.m.eng.Leave(s.f)
}
