package fxbus

import (
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
)

// MarshalOption sets the Marshaler of one route or subscription, instead
// of the bus's (Config.Marshaler, JSON by default). It is both a
// RouteOption and a SubscribeOption. Make one with [Marshal].
type MarshalOption struct{ m Marshaler }

// Marshal encodes a route's events with m, or decodes a subscription's
// with m, instead of the bus's Marshaler: protobuf for one topic while
// the rest stay JSON (see the protobuf package). A subscription reads
// each message with the Marshaler its content type ([MetadataContentType])
// names among its own, the bus's and JSON; a message of another content
// type, or of none, is decoded with the subscription's.
func Marshal(m Marshaler) MarshalOption { return MarshalOption{m: m} }

func (o MarshalOption) applyRoute(r *route)            { r.marshaler = o.m }
func (o MarshalOption) applySubscribe(s *subscription) { s.marshaler = o.m }

// marshalerOf is the Marshaler of route r.
func (b *Bus) marshalerOf(r route) Marshaler {
	if r.marshaler != nil {
		return r.marshaler
	}
	return b.cfg.Marshaler
}

// remarshal encodes msg's event again for a route whose Marshaler is not
// the one msg was made with.
func remarshal(m Marshaler, msg *message.Message, event any) error {
	payload, err := m.Marshal(event)
	if err != nil {
		return err
	}
	msg.Payload = payload
	msg.Metadata.Set(MetadataContentType, m.ContentType())
	return nil
}

// unmarshalerFor is the Marshaler that decodes msg for s: the one of s,
// of the bus or JSON whose content type msg's names, else the
// subscription's (the bus's when it has none).
func (b *Bus) unmarshalerFor(s *subscription, msg *message.Message) Marshaler {
	own := s.marshaler
	if own == nil {
		own = b.cfg.Marshaler
	}
	ct := msg.Metadata.Get(MetadataContentType)
	if ct == "" {
		return own
	}
	for _, m := range []Marshaler{own, b.cfg.Marshaler, JSON{}} {
		if sameMediaType(ct, m.ContentType()) {
			return m
		}
	}
	return own
}

// sameMediaType compares two media types without their parameters
// ("application/json; charset=utf-8" is JSON).
func sameMediaType(a, b string) bool {
	a, _, _ = strings.Cut(a, ";")
	b, _, _ = strings.Cut(b, ";")
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}
