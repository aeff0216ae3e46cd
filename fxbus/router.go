package fxbus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/zap"
)

// Start provisions the topics the bus declares (see [Bus.Provision]),
// subscribes to its subscribed topics and runs their handlers, processing
// their messages with m, and returns once they run. Every error carries
// its cause: a subscription the broker refuses fails Start naming the
// topic and the broker's reason, and nothing is left running. A bus
// without subscriptions only provisions.
func (b *Bus) Start(ctx context.Context, m *fxcqrs.Mediator) error {
	if m == nil {
		return errors.New("fxbus: Start: nil *fxcqrs.Mediator")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.router != nil {
		return errors.New("fxbus: Start: already started")
	}
	if err := b.provisionLocked(ctx); err != nil {
		return err
	}
	if len(b.topics) == 0 {
		return nil
	}
	router, err := message.NewRouter(message.RouterConfig{}, newLogger(b.log))
	if err != nil {
		return fmt.Errorf("fxbus: Start: %w", err)
	}
	topics := b.sortedTopics()
	subs := make([]*subscribed, len(topics))
	for i, topic := range topics {
		subs[i] = &subscribed{}
		if err := b.addHandler(ctx, router, b.topics[topic], m, subs[i]); err != nil {
			return err
		}
	}
	// The bus subscribes itself, before the router runs, so that a
	// subscription the broker refuses fails here, with its cause, and
	// the router (which would log the cause, and leave a goroutine behind
	// after a failed Run) never runs.
	subCtx, unsubscribe := context.WithCancel(context.Background())
	for i, topic := range topics {
		ts := b.topics[topic]
		tctx, cancel := context.WithCancel(subCtx)
		sub := subscriber{Subscriber: b.cfg.Subscriber, limit: ts.inFlightLimit(m), inFlight: &ts.inFlight, settled: b.settled, inOrder: ts.inOrder, b: b, ts: ts}
		ch, err := sub.Subscribe(tctx, topic)
		if err != nil {
			cancel()
			unsubscribe()
			drain(ctx, subs[:i])
			return fmt.Errorf("fxbus: Start: subscribe to %q: %w", topic, err)
		}
		subs[i].ch, subs[i].cancel = ch, cancel
	}
	b.router, b.unsubscribe = router, unsubscribe
	b.stopped = make(chan struct{})
	go b.run(router, b.stopped)
	select {
	case <-router.Running():
		return nil
	case <-b.stopped:
		b.router = nil // nothing runs: Stop has nothing to close
		unsubscribe()
		drain(ctx, subs)
		return fmt.Errorf("fxbus: the router stopped before it ran: %w", b.runErr)
	case <-ctx.Done():
		_ = router.Close()
		unsubscribe()
		return fmt.Errorf("fxbus: Start: %w", ctx.Err())
	}
}

// subscribed is a subscription Start made, as the router consumes it: the
// router's end of it (its handler's context) ends it.
type subscribed struct {
	ch     <-chan *message.Message
	cancel context.CancelFunc
}

// Subscribe returns the subscription Start made.
func (s *subscribed) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	context.AfterFunc(ctx, s.cancel)
	return s.ch, nil
}

// Close does nothing: the bus closes what it owns itself.
func (s *subscribed) Close() error { return nil }

// drain nacks what the subscriptions Start made still hand over, until
// they close (their contexts were cancelled) or ctx ends, so that nothing
// they started outlives a failed Start.
func drain(ctx context.Context, subs []*subscribed) {
	for _, s := range subs {
		if s.ch == nil {
			continue
		}
		for open := true; open; {
			select {
			case msg, ok := <-s.ch:
				if open = ok; ok {
					msg.Nack()
				}
			case <-ctx.Done():
				return
			}
		}
	}
}

// addHandler adds the handler of ts's topic to router, consuming sub, its
// middleware from the outside in: the poison queue (the topic's dead
// letter), the dead letter's log and record, parking (InOrder), decoding
// (once, for every attempt), retries, and the count of attempts. An InOrder topic loads its parked keys first.
func (b *Bus) addHandler(ctx context.Context, router *message.Router, ts *topicSubs, m *fxcqrs.Mediator, sub *subscribed) error {
	poison, err := middleware.PoisonQueueWithFilter(deadLetterPublisher{b.cfg.Publisher, b.log}, ts.dead, func(err error) bool {
		return !errors.As(err, new(*redeliver))
	})
	if err != nil {
		return fmt.Errorf("fxbus: Start: the dead letter of %q: %w", ts.topic, err)
	}
	h := router.AddConsumerHandler("fxbus "+ts.topic, ts.topic, sub, b.handler(ts, m))
	mws := []message.HandlerMiddleware{poison, b.logDeadLetter(ts)}
	if ts.inOrder {
		if err := b.loadParked(ctx, ts); err != nil {
			return err
		}
		if p := b.parking(); p != nil {
			mws = append(mws, b.park(ts, p))
		}
	}
	h.AddMiddleware(append(mws, b.decodeOnce(ts), b.retry(ts).Middleware, b.countAttempts)...)
	return nil
}

// deadLetterPublisher publishes dead letters. On the in-process broker, a
// dead letter topic nothing in the process subscribes to drops its
// messages (the broker keeps nothing, and its log line and record are
// where it is), instead of failing the poison queue, which would nack the
// message and have it redelivered again and again.
type deadLetterPublisher struct {
	message.Publisher
	log *zap.Logger
}

// Publish publishes msgs to the dead letter topic.
func (p deadLetterPublisher) Publish(topic string, msgs ...*message.Message) error {
	err := p.Publisher.Publish(topic, msgs...)
	if errors.As(err, new(*errNoSubscriber)) {
		p.log.Warn("nothing in the process subscribes to the dead letter topic, and the in-process broker keeps nothing: the dead letter is dropped",
			zap.String("deadLetter", topic), zap.Int("messages", len(msgs)))
		return nil
	}
	return err
}

// Close does nothing: the bus closes what it owns itself.
func (p deadLetterPublisher) Close() error { return nil }

// retry retries a message of ts's topic that failed, with backoff as
// its RetryPolicy says: not one that cannot be decoded, which would fail
// again, nor one nacked for redelivery.
func (b *Bus) retry(ts *topicSubs) middleware.Retry {
	return middleware.Retry{
		MaxRetries:          ts.retry.MaxRetries,
		InitialInterval:     ts.retry.InitialInterval,
		MaxInterval:         ts.retry.MaxInterval,
		Multiplier:          2,
		RandomizationFactor: 0.2,
		ShouldRetry: func(p middleware.RetryParams) bool {
			return !errors.As(p.Err, new(*malformed)) && !errors.As(p.Err, new(*redeliver)) && !errors.Is(p.Err, ErrExpired) &&
				!errors.As(p.Err, new(*unknownTenant))
		},
		ResetContextOnRetry: true,
		Logger:              newLogger(b.log),
	}
}

// run runs router until it is closed, then closes stopped. It runs on a
// goroutine of its own, where a panic (a subscriber's, say) would take
// the process down: it is logged, and the bus has stopped.
func (b *Bus) run(router *message.Router, stopped chan struct{}) {
	defer close(stopped)
	defer func() {
		if v := recover(); v != nil {
			b.runErr = fmt.Errorf("the router panicked: %v", v)
			b.log.Error("router panicked; the bus consumes nothing more", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
		}
	}()
	if err := router.Run(context.Background()); err != nil {
		b.runErr = err
		b.log.Error("router stopped", zap.Error(err))
		return
	}
	b.runErr = errors.New("it stopped without an error")
}

// Stop stops consuming: it waits, until ctx ends, for the messages being
// processed to finish, then returns. A message whose processing had not
// finished is not acknowledged: the broker redelivers it. Stop lets go of
// the in-process broker the bus holds (the last bus to let go closes
// it), and never closes a publisher or subscriber it
// was given.
func (b *Bus) Stop(ctx context.Context) error {
	b.mu.Lock()
	router, stopped, unsubscribe := b.router, b.stopped, b.unsubscribe
	b.mu.Unlock()
	var err error
	if router != nil {
		closed := make(chan error, 1)
		go func() { closed <- router.Close() }()
		select {
		case err = <-closed:
			<-stopped
			// Watermill's router can return from Close with a message it
			// took as it closed still in its handler: wait for those too.
			unsubscribe()
			err = errors.Join(err, b.waitSettled(ctx))
		case <-ctx.Done():
			err = b.stopLate(ctx)
		}
	}
	if unsubscribe != nil {
		unsubscribe()
	}
	if b.owned != nil {
		err = errors.Join(err, b.owned.Close())
	}
	return err
}

// waitSettled waits, until ctx ends, for the messages in flight to be
// acknowledged or nacked.
func (b *Bus) waitSettled(ctx context.Context) error {
	for {
		if n, _ := b.inFlight(); n == 0 {
			return nil
		}
		select {
		case <-b.settled:
		case <-ctx.Done():
			return b.stopLate(ctx)
		}
	}
}

// stopLate is Stop's error when its deadline passed with messages in
// flight.
func (b *Bus) stopLate(ctx context.Context) error {
	n, byTopic := b.inFlight()
	b.log.Warn("stop deadline passed with messages in flight; they are not acknowledged, and the broker redelivers them",
		zap.Int64("messages", n), zap.Any("byTopic", byTopic))
	return fmt.Errorf("fxbus: Stop: %d messages still in flight: %w", n, ctx.Err())
}

// inFlightLimit is the topic's bound on messages in flight: its own, or
// four times the mediator's event limit.
func (ts *topicSubs) inFlightLimit(m *fxcqrs.Mediator) int {
	if ts.limit > 0 {
		return ts.limit
	}
	return max(4*m.Stats().Events.Limit, 4)
}

// inFlight counts the messages between delivery and ack or nack, in all
// and by topic.
func (b *Bus) inFlight() (int64, map[string]int64) {
	var total int64
	byTopic := map[string]int64{}
	for topic, ts := range b.topics {
		if n := ts.inFlight.Load(); n > 0 {
			byTopic[topic] = n
			total += n
		}
	}
	return total, byTopic
}

// countAttempts, inside Retry, counts each attempt at a message: those
// beyond the messages logDeadLetter saw are retries.
func (b *Bus) countAttempts(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		b.attempts.Add(1)
		return h(msg)
	}
}

// logDeadLetter logs, at warn level, each message that goes to the
// topic's dead letter, with its id and the reason: what the poison
// middleware, which runs outside it, publishes without a word. A message
// nacked for redelivery is not one.
func (b *Bus) logDeadLetter(ts *topicSubs) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			b.received.Add(1)
			out, err := h(msg)
			if ctx := msg.Context(); err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) && !errors.As(err, new(*redeliver)) {
				// The message's context ended (its subscription's, on
				// some brokers, as the bus stops) before its handlers
				// ran, or in the retries' wait: it was not processed.
				b.redelivered.Add(1)
				err = &redeliver{err: err}
			}
			if err != nil && !errors.As(err, new(*redeliver)) {
				expired := b.deadLetterExpired(ts, msg, err) // counts itself in expired
				if !expired {
					b.deadLettered.Add(1)
				}
				if rec := b.cfg.DeadLetters; rec != nil {
					ctx := context.WithoutCancel(msg.Context())
					record := func() error { return rec.RecordDeadLetter(ctx, ts.topic, msg, err) }
					// Neither an expired message nor one of an unknown tenant
					// (its key is as untrusted as its tenant) parks its key.
					if p, key := b.parking(), msg.Metadata.Get(MetadataKey); ts.inOrder && p != nil && key != "" && !expired && !errors.As(err, new(*unknownTenant)) {
						record = func() error { return p.RecordParked(ctx, ts.topic, key, msg, err) }
					}
					if rerr := record(); rerr != nil {
						b.log.Error("a dead letter could not be recorded; it is in its dead letter topic", zap.String("topic", ts.topic), zap.String("messageId", msg.UUID), zap.Error(rerr))
					}
				}
				if !expired {
					b.log.Warn("message goes to the dead letter topic",
						zap.String("topic", ts.topic), zap.String("deadLetter", ts.dead), zap.String("messageId", msg.UUID), zap.Error(err))
				}
			}
			return out, err
		}
	}
}
