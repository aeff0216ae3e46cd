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

// handler processes one topic's messages.
func (b *Bus) handler(ts *topicSubs, m *fxcqrs.Mediator) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		name := msg.Metadata.Get(MetadataName)
		s := ts.byName[name]
		if s == nil {
			switch {
			case name == "" && ts.only != nil:
				s = ts.only
			case name == "":
				return &malformed{err: fmt.Errorf("no %q metadata, and topic %q carries several event types", MetadataName, ts.topic)}
			default:
				b.skipped.Add(1)
				b.log.Debug("message skipped: no subscription for its event name",
					zap.String("topic", ts.topic), zap.String("name", name), zap.String("id", msg.UUID))
				return nil
			}
		}
		event, err := s.decode(b.cfg.Marshaler, msg.Payload)
		if err != nil {
			return &malformed{err: fmt.Errorf("decode %s: %w", s.typ, err)}
		}
		ctx, end := b.Process(msg.Context(), ts.topic, msg)
		ctx = fxcqrs.Foreground(ctx)
		err = s.publish(ctx, m, event)
		end(err)
		switch {
		case err == nil:
			b.handled.Add(1)
			return nil
		case errors.Is(err, fxcqrs.ErrStopped), ctx.Err() != nil:
			b.redelivered.Add(1)
			return &redeliver{err: err}
		}
		return err
	}
}
