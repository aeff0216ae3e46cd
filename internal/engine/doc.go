// Package engine is fxcqrs's event processing: python-cqrs's "Parallel
// Event Processing", with its flaws fixed. Everything about when and where
// an event handler runs is here; the root package is the public API around
// it and never reaches inside.
//
// # The behaviour
//
// A handler handles a request and emits events (Emit, into its Frame). When
// the handler returns successfully, the root hands what it emitted to
// [Engine.Process], which returns once every event has been processed,
// follow-ups included, so that the response is returned only then. One
// invocation is one event × one handler. A lane (Events for Send, Exec and
// Publish; StreamEvents for stream items) runs invocations in one of two
// ways, as its [Mode] says:
//
//   - concurrently, at most Limit at once in the whole engine, shared by
//     every call of the lane. Invocations take slots in emit order, and one
//     that waits for a slot holds no goroutine (queue.go);
//   - sequentially, one after another on the caller's goroutine, emit order
//     then handler order, follow-ups breadth first (inline.go).
//
// Follow-ups (events emitted by event handlers) join the same call and
// mode. A failed handler's follow-ups are discarded with it. A chain deeper
// than MaxDepth is stopped with a failure, not an infinite loop.
//
// # What python-cqrs gets wrong, and what this does instead
//
//   - A failed event handler loses nothing: every invocation either runs or
//     comes back as a [Failure], beside the call's valid response.
//   - A call made from inside an event handler never deadlocks, whatever
//     the limit: it runs its events inline, on the slot its caller holds.
//   - A cancelled context, a full background queue or a stop never drops an
//     invocation silently: it is reported as [NotStarted].
//   - A panicking handler becomes a failure ([Panic]) on every goroutine.
//
// # Where to start reading
//
// [Engine.Process] names the modes in one switch: inline (inline.go),
// background (background.go), one invocation alone (alone.go), queued
// (queue.go). The concurrent modes share a lane's dispatcher
// (dispatcher.go: its slots) and its FIFO of waiting invocations
// (fifo.go). An invocation runs in invoke.go. The handlers of an event
// type are found in engine.go (concrete types) and dynamic.go (interface
// types). Frames, the per-call contexts that collect events, are in
// frame.go, their pooled buffers in buffer.go, the typed records in
// record.go, and the count of calls in flight that Stop drains in
// flight.go.
//
// # The boundary with the root package
//
// The engine never imports the root package. It knows nothing of the
// Mediator, middleware or observers: a [Handler] whose Run is set is run
// through that function (the root's middleware, observer and recovery);
// one without is called directly, the hot path. A [Reporter] hears what is
// queued and what never starts. The engine's own [Failure], [Panic] and
// [NotStarted] are turned into the public error types by the root, in one
// place.
package engine
