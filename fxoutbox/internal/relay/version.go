package relay

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// upcaster is a Bus that brings stored messages to their types' current
// versions (fxbus.Bus.Upcast).
type upcaster interface {
	Upcast(msg *message.Message) error
}

// unreadable dead-letters a row upcast refused, and counts it as progress:
// the rows before it in its batch go in the next pass, at once.
func (s *sender) unreadable(ctx context.Context, topic string, rw row, cause error) (int, error) {
	if err := s.deadLetter(ctx, topic, rw, cause); err != nil {
		return 0, err
	}
	return 1, nil
}

// upcast brings a row's message to its type's current version before it
// is published: a row no upcaster chain reaches goes to the dead letter
// table with the reason. One newer than the type here (written by a
// replica already upgraded) is passed on as it is: the relay decodes
// nothing, and its consumers, upgraded first, read it (see
// fxbus.Version).
func (s *sender) upcast(msg *message.Message) error {
	u, ok := s.bus.(upcaster)
	if !ok {
		return nil
	}
	err := u.Upcast(msg)
	if verr := (*fxbus.VersionError)(nil); errors.As(err, &verr) && verr.Newer() {
		return nil
	}
	return err
}
