package fxbus

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"go.uber.org/zap"
)

// malformed marks a message that cannot be decoded: it goes to the dead
// letter at once.
type malformed struct{ err error }

func (e *malformed) Error() string { return "malformed message: " + e.err.Error() }
func (e *malformed) Unwrap() error { return e.err }

// redeliver marks a message that was not processed because the mediator
// is stopping or its context ended: it is nacked for redelivery, neither
// retried here nor dead-lettered.
type redeliver struct{ err error }

func (e *redeliver) Error() string { return "not processed, to be redelivered: " + e.err.Error() }
func (e *redeliver) Unwrap() error { return e.err }

// decoded is a message's event, decoded once however often its handlers
// are retried: a large payload costs its decoding (JSON scans every byte,
// twice) once, not once per attempt.
type decoded struct {
	sub   *subscription
	event any
}

// decode finds msg's subscription and decodes its event: nil, nil for a
// message no subscription of the topic takes (skipped).
func (b *Bus) decode(ts *topicSubs, msg *message.Message) (*decoded, error) {
	if err := fromCloudEvent(msg); err != nil {
		return nil, &malformed{err: err}
	}
	name := msg.Metadata.Get(MetadataName)
	if err := b.upcastInbound(ts, name, msg); err != nil {
		return nil, err
	}
	s := ts.byName[name]
	if s == nil {
		switch {
		case name == "" && ts.only != nil:
			s = ts.only
		case name == "":
			return nil, &malformed{err: fmt.Errorf("no %q metadata, and topic %q carries several event types", MetadataName, ts.topic)}
		default:
			b.skipped.Add(1)
			b.log.Debug("message skipped: no subscription for its event name",
				zap.String("topic", ts.topic), zap.String("name", name), zap.String("id", msg.UUID))
			return nil, nil
		}
	}
	event, err := s.decode(b.unmarshalerFor(s, msg), msg.Payload)
	if err != nil {
		return nil, &malformed{err: fmt.Errorf("decode %s: %w", s.typ, err)}
	}
	return &decoded{sub: s, event: event}, nil
}

// decodeOnce is the middleware, outside the retries, that decodes each
// message of ts's topic once for every attempt at it.
func (b *Bus) decodeOnce(ts *topicSubs) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d, err := b.decode(ts, msg)
			if err != nil || d == nil {
				b.attempts.Add(1) // an attempt, the only one: Stats' retries are attempts beyond the messages
				return nil, err
			}
			ts.decoded.Store(msg, d)
			defer ts.decoded.Delete(msg)
			return h(msg)
		}
	}
}

// handler processes one topic's messages: their events decoded by
// decodeOnce, or decoded here.
func (b *Bus) handler(ts *topicSubs, m *fxcqrs.Mediator) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		tenant, err := b.resolveTenant(msg.Context(), msg)
		if err != nil {
			return err // before each attempt: an unknown tenant's message is neither handled nor retried
		}
		if err := b.checkExpiry(msg); err != nil {
			return err // before each attempt: an expired message is neither handled nor retried
		}
		var d *decoded
		if v, ok := ts.decoded.Load(msg); ok {
			d = v.(*decoded)
		} else {
			if d, err = b.decode(ts, msg); err != nil || d == nil {
				return err
			}
		}
		ctx, end := b.Process(msg.Context(), ts.topic, msg)
		ctx = fxcqrs.Foreground(WithTenant(ctx, tenant)) // the known tenant, not the metadata's text
		err = d.sub.publish(ctx, m, d.event)
		end(err)
		switch {
		case err == nil:
			b.handled.Add(1)
			return nil
		case errors.Is(err, fxcqrs.ErrStopped), errors.Is(err, ErrFenced), ctx.Err() != nil:
			b.redelivered.Add(1)
			return &redeliver{err: err}
		}
		return err
	}
}
