package fxbus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/fx"
)

// subscription processes the messages of one event type on one topic.
type subscription struct {
	topic      string
	typ        reflect.Type
	name       string // the event's name on the wire; "" for the default
	version    int    // the event type's version on the wire; 0: undeclared (see Version)
	deadLetter string
	retry      RetryPolicy
	inFlight   int
	inOrder    bool
	marshaler  Marshaler // see Marshal; nil: the bus's
	limit      Limit     // see RateLimit, when limited
	limited    bool
	fair       Per // see FairShares; 0: none
	lookahead  int // see Lookahead; 0: the default

	decode  func(m Marshaler, data []byte) (any, error)
	publish func(ctx context.Context, m *fxcqrs.Mediator, event any) error
}

// SubscribeOption configures a subscription.
type SubscribeOption interface{ applySubscribe(*subscription) }

type subscribeFunc func(*subscription)

func (f subscribeFunc) applySubscribe(s *subscription) { f(s) }

// DeadLetter sets the topic where messages go that cannot be processed:
// those that cannot be decoded, at once, and those whose handlers still
// fail after the retries. Default: the topic followed by "_poison" (no
// dot: NATS JetStream stream names cannot contain one). The
// message keeps its payload and metadata; Watermill's "reason_poisoned"
// metadata says why.
func DeadLetter(topic string) SubscribeOption {
	return subscribeFunc(func(s *subscription) { s.deadLetter = topic })
}

// RetryPolicy is how often, and how soon, a message whose handlers failed
// is processed again in the process before it goes to the dead letter.
type RetryPolicy struct {
	// MaxRetries is the number of retries after the first attempt.
	// Default 3; negative means none.
	MaxRetries int `json:"maxRetries" yaml:"maxRetries"`
	// InitialInterval is the wait before the first retry. Default 100ms.
	InitialInterval time.Duration `json:"initialInterval" yaml:"initialInterval"`
	// MaxInterval bounds each wait, which doubles from InitialInterval.
	// Default 5s.
	MaxInterval time.Duration `json:"maxInterval" yaml:"maxInterval"`
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	switch {
	case p.MaxRetries == 0:
		p.MaxRetries = 3
	case p.MaxRetries < 0:
		p.MaxRetries = 0
	}
	if p.InitialInterval <= 0 {
		p.InitialInterval = 100 * time.Millisecond
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = 5 * time.Second
	}
	return p
}

// InFlight bounds the topic's messages between their delivery and their
// acknowledgement (or nack): while n are in flight the bus reads no more
// from the broker, which keeps the rest, so that a burst costs neither
// memory nor a goroutine per message. Default: four times the mediator's
// Config.Events limit (at least 4). Every subscription of a topic must
// agree on it. A topic with [FairShares] or a [RateLimit] hands at most n
// to its handlers at once and holds up to [Lookahead] more, waiting.
func InFlight(n int) SubscribeOption {
	return subscribeFunc(func(s *subscription) { s.inFlight = n })
}

// Retry sets the subscription's retry policy.
func Retry(p RetryPolicy) SubscribeOption {
	return subscribeFunc(func(s *subscription) { s.retry = p })
}

// wireName is the event name the subscription takes on its topic.
func (s *subscription) wireName() string {
	if s.name != "" {
		return s.name
	}
	return defaultName(s.typ)
}

// Subscription is a subscription made for [New], without fx. Make one
// with [NewSubscription].
type Subscription struct {
	s   subscription
	err error
}

// NewSubscription is [Subscribe] for [New]: messages on topic are decoded
// as E and processed with fxcqrs.Publish.
func NewSubscription[E any](topic string, opts ...SubscribeOption) Subscription {
	s := subscription{
		topic: topic,
		typ:   reflect.TypeFor[E](),
		decode: func(m Marshaler, data []byte) (any, error) {
			var e E
			if err := m.Unmarshal(data, &e); err != nil {
				return nil, err
			}
			return e, nil
		},
		publish: func(ctx context.Context, m *fxcqrs.Mediator, event any) error {
			return fxcqrs.Publish(ctx, m, event.(E))
		},
	}
	for _, opt := range opts {
		opt.applySubscribe(&s)
	}
	if s.deadLetter == "" {
		s.deadLetter = topic + "_poison"
	}
	s.retry = s.retry.withDefaults()
	var errs []error
	if topic == "" {
		errs = append(errs, fmt.Errorf("fxbus.Subscribe[%s]: the topic is empty", s.typ))
	}
	if s.typ.Kind() == reflect.Interface {
		errs = append(errs, fmt.Errorf("fxbus.Subscribe[%s]: an interface type cannot be decoded: subscribe to each concrete event type", s.typ))
	}
	if s.inFlight < 0 {
		errs = append(errs, fmt.Errorf("fxbus.Subscribe[%s]: InFlight must not be negative: got %d", s.typ, s.inFlight))
	}
	if s.limited {
		if err := s.limit.check(); err != nil {
			errs = append(errs, fmt.Errorf("fxbus.Subscribe[%s]: RateLimit: %w", s.typ, err))
		}
		s.limit = s.limit.withDefaults()
	}
	if s.fair != 0 && (s.fair < PerKey || s.fair > PerType) {
		errs = append(errs, fmt.Errorf("fxbus.Subscribe[%s]: FairShares must count PerKey, PerTenant or PerType: got %v", s.typ, s.fair))
	}
	if s.lookahead < 0 {
		errs = append(errs, fmt.Errorf("fxbus.Subscribe[%s]: Lookahead must not be negative: got %d", s.typ, s.lookahead))
	}
	if s.deadLetter == topic {
		errs = append(errs, fmt.Errorf("fxbus.Subscribe[%s]: the dead letter topic is the topic itself (%s)", s.typ, topic))
	}
	return Subscription{s: s, err: errors.Join(errs...)}
}

// Subscribe processes each message on topic as an event of type E: it is
// decoded and handed to fxcqrs.Publish, in the foreground even when the
// mediator's events run in the background, so that the message is
// acknowledged only after its handlers ran. When Publish returns nil the
// message is acknowledged; when it fails, the message is retried in the
// process with backoff ([Retry]) and then sent to the dead letter
// ([DeadLetter]) with the reason; when the mediator is stopping, or the
// message's context ended, it is nacked so that the broker redelivers it,
// to this replica later or to another. A message that cannot be decoded
// goes to the dead letter at once.
//
// Several event types may share a topic: each message goes to the
// subscription its [MetadataName] names; a message whose name no
// subscription of the topic has is acknowledged and skipped (logged at
// debug level). A message without a name is decoded as the topic's only
// subscribed type when there is one, and dead-lettered otherwise.
func Subscribe[E any](topic string, opts ...SubscribeOption) fx.Option {
	s := NewSubscription[E](topic, opts...)
	if s.err != nil {
		return fx.Error(s.err)
	}
	return fx.Provide(fx.Annotate(func() Subscription { return s }, fx.ResultTags(`group:"fxbus.subscriptions"`)))
}
