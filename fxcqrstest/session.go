package fxcqrstest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
)

// Session is an fx application under test whose consequences a test can
// wait for, without sleeping: Settle returns once every call has
// returned, every message this application sent to a topic it consumes
// has been processed, its outbox holds no row that is due, no scheduled
// message is due by the clock, and no saga is running or compensating;
// Happened lists what it did, in order. Over a real broker, whose other
// consumers the session cannot see, WaitFor waits for what the test
// expects instead.
//
// The session is the application's fxcqrs.Observer and fxbus.Tracer: it
// replaces the otel module's, which a session's application should not
// also load.
type Session struct {
	// App is the application, started; it stops when the test ends.
	App *fxtest.App
	// Mediator is the application's.
	Mediator *fxcqrs.Mediator
	// Timeout bounds Settle and WaitFor: a bound only a hang should
	// reach, since they return as soon as the application has settled,
	// however busy the machine. Default 1m.
	Timeout time.Duration

	t     testing.TB
	now   func() time.Time
	parts parts
	j     *journal
}

// parts are what the application has of what Settle looks at.
type parts struct {
	fx.In

	Mediator *fxcqrs.Mediator
	Bus      *fxbus.Bus       `optional:"true"`
	Outbox   *fxoutbox.Outbox `optional:"true"`
	Store    fxsaga.Store     `optional:"true"`
}

// Happening is one thing a session's application did.
type Happening struct {
	// What: "command", "request", "publish" (an inbound message handed
	// to the mediator, or a Publish), "event" (one handler of one event),
	// "sent" (a message to a topic), "processed" (a message from a
	// topic, handled).
	What string
	// Name is the message's type or wire name, and its handler for an
	// event.
	Name string
	// Topic is the topic of a message sent or processed.
	Topic string
	// Err is its error, if any.
	Err string
}

func (h Happening) String() string {
	s := h.What + " " + h.Name
	if h.Topic != "" {
		s += " @" + h.Topic
	}
	if h.Err != "" {
		s += ": " + h.Err
	}
	return s
}

// NewSession starts the application of opts, with now as the clock that
// decides which scheduled messages are due (nil: time.Now; give the one
// the application's outbox runs on, outboxtest.Clock's Now).
//
// fx's own log of the application's start and stop (some 60 lines a
// test) is written to the test's log under go test -v only; an
// fx.WithLogger among opts replaces that choice.
func NewSession(t testing.TB, now func() time.Time, opts ...fx.Option) *Session {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	j := &journal{sent: map[string]int{}, processed: map[string]int{}}
	s := &Session{t: t, now: now, j: j, Timeout: time.Minute}
	if !testing.Verbose() {
		opts = append([]fx.Option{fx.NopLogger}, opts...)
	}
	s.App = fxtest.New(t, append(opts,
		fx.Supply(fx.Annotate(j, fx.As(new(fxcqrs.Observer)))),
		fx.Supply(fx.Annotate(j, fx.As(new(fxbus.Tracer)))),
		fx.Populate(&s.parts),
	)...)
	s.App.RequireStart()
	t.Cleanup(s.App.RequireStop)
	s.Mediator = s.parts.Mediator
	return s
}

// Happened returns what the application did so far, in order.
func (s *Session) Happened() []Happening {
	s.j.mu.Lock()
	defer s.j.mu.Unlock()
	return slices.Clone(s.j.happened)
}

// Settle waits until every consequence of what the test did has settled
// (see Session), and fails with what was still pending after Timeout.
func (s *Session) Settle(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	calm := 0
	for {
		pending, err := s.pending(ctx)
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			if calm++; calm == 3 { // three looks in a row: nothing between two of them
				return nil
			}
		} else {
			calm = 0
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fxcqrstest: not settled after %v: %s", s.Timeout, strings.Join(pending, "; "))
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// WaitFor waits until done is true of what happened, and fails with what
// happened after Timeout.
func (s *Session) WaitFor(ctx context.Context, done func([]Happening) bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	for !done(s.Happened()) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("fxcqrstest: not there after %v; what happened: %v", s.Timeout, s.Happened())
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// pending says what has not settled.
func (s *Session) pending(ctx context.Context) ([]string, error) {
	var out []string
	if n := s.parts.Mediator.Stats().InFlight; n > 0 {
		out = append(out, fmt.Sprintf("%d mediator calls in flight", n))
	}
	if b := s.parts.Bus; b != nil {
		s.j.mu.Lock()
		for _, topic := range b.Subscribed() {
			if sent, done := s.j.sent[topic], s.j.processed[topic]; done < sent {
				out = append(out, fmt.Sprintf("%d of %d messages to %s not processed", sent-done, sent, topic))
			}
		}
		s.j.mu.Unlock()
		if n := b.Stats().InFlight; n > 0 {
			out = append(out, fmt.Sprintf("%d inbound messages in flight", n))
		}
	}
	if o := s.parts.Outbox; o != nil {
		backlog, err := o.Backlog(ctx)
		if err != nil {
			return nil, err
		}
		for _, b := range backlog {
			if b.Due > 0 {
				out = append(out, fmt.Sprintf("%d outbox rows due on %s (after a failed pass the relay waits its retry backoff on the outbox's clock, Config.After: a fake clock must be moved for it to retry)", b.Due, b.Topic))
			}
		}
		sched, err := o.Scheduled(ctx)
		if err != nil {
			return nil, err
		}
		if sched.Rows > 0 && !sched.Next.After(s.now()) {
			out = append(out, "a scheduled message is due")
		}
	}
	if r, ok := s.parts.Store.(fxsaga.Reader); ok {
		counts, err := r.Counts(ctx)
		if err != nil {
			return nil, err
		}
		for _, c := range counts {
			if c.Status == fxsaga.Running || c.Status == fxsaga.Compensating {
				out = append(out, fmt.Sprintf("%d sagas %s %s", c.N, c.Name, strings.ToLower(string(c.Status))))
			}
		}
	}
	return out, nil
}

// journal is the session's Observer and Tracer: what happened.
type journal struct {
	fxcqrs.NopObserver

	mu        sync.Mutex
	happened  []Happening
	sent      map[string]int // messages sent, by topic
	processed map[string]int // messages processed (ended), by topic
}

func (j *journal) add(h Happening) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.happened = append(j.happened, h)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// CallFinished records a command, request or publish.
func (j *journal) CallFinished(_ context.Context, p fxcqrs.CallFinished) {
	what := map[fxcqrs.Kind]string{fxcqrs.KindCommand: "command", fxcqrs.KindRequest: "request", fxcqrs.KindPublish: "publish"}[p.Call.Kind]
	if what == "" {
		return
	}
	var evErr *fxcqrs.EventError
	err := p.Err
	if errors.As(err, &evErr) {
		err = nil // its events' failures are the events' own
	}
	j.add(Happening{What: what, Name: p.Call.MessageType, Err: errText(err)})
}

// InvocationFinished records one event handler's run.
func (j *journal) InvocationFinished(_ context.Context, p fxcqrs.InvocationFinished) {
	j.add(Happening{What: "event", Name: p.Call.MessageType + " -> " + p.Call.Handler, Err: errText(p.Err)})
}

// Create records nothing: a message is recorded when it is sent.
func (j *journal) Create(ctx context.Context, _ *message.Message, _ []string) context.Context {
	return ctx
}

// Send records messages sent to topic.
func (j *journal) Send(_ context.Context, topic string, msgs []*message.Message) func(error) {
	return func(err error) {
		j.mu.Lock()
		defer j.mu.Unlock()
		if err == nil {
			j.sent[topic] += len(msgs)
		}
		for _, m := range msgs {
			j.happened = append(j.happened, Happening{What: "sent", Name: m.Metadata.Get(fxbus.MetadataName), Topic: topic, Err: errText(err)})
		}
	}
}

// Process records a message processed from topic.
func (j *journal) Process(ctx context.Context, topic string, msg *message.Message) (context.Context, func(error)) {
	return ctx, func(err error) {
		j.mu.Lock()
		defer j.mu.Unlock()
		j.processed[topic]++
		j.happened = append(j.happened, Happening{What: "processed", Name: msg.Metadata.Get(fxbus.MetadataName), Topic: topic, Err: errText(err)})
	}
}
