package fxbus

import (
	"context"
	"encoding/json"
	"reflect"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
)

// The wire format, for consumers and producers in other languages: the
// message payload is the event, encoded by the Marshaler (JSON by
// default), and its metadata carries these keys. The message's own id
// (Watermill's message UUID, sent by each broker in its own id field) is a
// UUIDv7.
const (
	// MetadataName is the event's stable name: by default its Go type's
	// bare name ("OrderPlaced"), which does not change when a package is
	// renamed; [Name] overrides it.
	MetadataName = "name"
	// MetadataContentType is the payload's media type, such as
	// "application/json".
	MetadataContentType = "content_type"
	// MetadataCorrelationID is the id shared by every message of one
	// causal chain: the id of the first message of the chain. It is
	// Watermill's own correlation key.
	MetadataCorrelationID = middleware.CorrelationIDMetadataKey
	// MetadataCausationID is the id of the message whose handling emitted
	// this one; absent at the start of a chain.
	MetadataCausationID = "causation_id"
	// MetadataKey is the event's key, when its route has one ([KeyBy]):
	// the messages of one key keep their order, from the relay to the
	// consumers that ask for it ([InOrder]).
	MetadataKey = "key"
	// MetadataReplay marks a message put back by a repair (a replay of a
	// dead letter): it keeps its id, so that a handler that had it skips
	// it by its inbox, and a broker that deduplicates by message id
	// (JetStream, through natsjs) is given the id and this mark, so that it
	// takes the replay as new.
	MetadataReplay = "replay"
	// MetadataVersion is the version of the event's type on the wire, a
	// decimal integer from "1"; a message without it is version 1. With
	// MetadataName it names the shape of the payload, so that a reader
	// whose type is newer can upcast it before decoding.
	MetadataVersion = "version"
	// MetadataDeliverBy is the time after which the message is worth
	// nothing, in RFC 3339 with nanoseconds (UTC); a subscription that
	// receives it later dead-letters it with the reason "expired" instead
	// of handling it. Absent: the message never expires.
	MetadataDeliverBy = "deliver_by"
	// MetadataTenant is the id of the tenant whose work the message is
	// ([WithTenant]); absent for the default tenant. A subscription takes
	// it for a known tenant only through Config.Tenants, and dead-letters
	// the message otherwise ([ErrUnknownTenant]).
	MetadataTenant = "tenant"
)

// Marshaler encodes events into message payloads and back.
type Marshaler interface {
	// ContentType is the payload's media type.
	ContentType() string
	// Marshal encodes event.
	Marshal(event any) ([]byte, error)
	// Unmarshal decodes data into the event into points to.
	Unmarshal(data []byte, into any) error
}

// JSON is the default Marshaler: encoding/json.
type JSON struct{}

// ContentType returns "application/json".
func (JSON) ContentType() string { return "application/json" }

// Marshal encodes event as JSON.
func (JSON) Marshal(event any) ([]byte, error) { return json.Marshal(event) }

// Unmarshal decodes JSON data into into.
func (JSON) Unmarshal(data []byte, into any) error { return json.Unmarshal(data, into) }

// inbound is what a consumed message puts in the context of its handling,
// so that the events emitted while handling it carry the chain on.
type inbound struct {
	id, correlation, causation string
}

type inboundKey struct{}

func withInbound(ctx context.Context, msg *message.Message) context.Context {
	in := inbound{
		id:          msg.UUID,
		correlation: msg.Metadata.Get(MetadataCorrelationID),
		causation:   msg.Metadata.Get(MetadataCausationID),
	}
	if in.correlation == "" {
		in.correlation = in.id
	}
	// The tenant as the metadata has it ("" without: the default tenant,
	// whatever ctx held). A subscription puts the tenant its Tenants
	// resolved in its place; the outbox's own delivery reads its own rows.
	if tenant := msg.Metadata.Get(MetadataTenant); tenant != "" || TenantOf(ctx) != "" {
		ctx = WithTenant(ctx, tenant)
	}
	return context.WithValue(ctx, inboundKey{}, in)
}

// MessageID returns the id of the message whose handling ctx belongs to,
// or "" outside one.
func MessageID(ctx context.Context) string {
	in, _ := ctx.Value(inboundKey{}).(inbound)
	return in.id
}

// CorrelationID returns the correlation id of the message whose handling
// ctx belongs to, or "" outside one.
func CorrelationID(ctx context.Context) string {
	in, _ := ctx.Value(inboundKey{}).(inbound)
	return in.correlation
}

// CausationID returns the causation id of the message whose handling ctx
// belongs to (the id of the message that led to it), or "" outside one or
// at the start of a chain.
func CausationID(ctx context.Context) string {
	in, _ := ctx.Value(inboundKey{}).(inbound)
	return in.causation
}

// newMessage encodes event as a message named name of the given version, continuing the chain
// of ctx.
func newMessage(ctx context.Context, m Marshaler, name string, version int, event any) (*message.Message, error) {
	payload, err := m.Marshal(event)
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(id.String(), payload)
	msg.Metadata.Set(MetadataName, name)
	msg.Metadata.Set(MetadataContentType, m.ContentType())
	msg.Metadata.Set(MetadataVersion, strconv.Itoa(version))
	corr := CorrelationID(ctx)
	if corr == "" {
		corr = msg.UUID // the first message of its chain
	}
	msg.Metadata.Set(MetadataCorrelationID, corr)
	if cause := MessageID(ctx); cause != "" {
		msg.Metadata.Set(MetadataCausationID, cause)
	}
	if tenant := TenantOf(ctx); tenant != "" {
		msg.Metadata.Set(MetadataTenant, tenant)
	}
	return msg, nil
}

// defaultName is an event type's name on the wire unless a route or
// subscription names it: the bare type name.
func defaultName(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		return t.Elem().Name()
	}
	return t.Name()
}

// WithMessage returns ctx as the context of handling msg, as a
// subscription of b gives it to its handlers: MessageID, CorrelationID
// and CausationID report msg's, TenantOf its tenant metadata as it is
// (unresolved: the caller delivers rows it wrote itself; a subscription
// resolves it through Config.Tenants first), the events emitted under it
// carry its chain on, and b's Propagators have extracted what msg
// carries. It is
// for code that delivers a stored message to the mediator itself, such as
// the outbox's durable in-process delivery.
func (b *Bus) WithMessage(ctx context.Context, msg *message.Message) context.Context {
	return b.extract(ctx, msg)
}

// NameOf returns the name event type t has on the wire: its route's or
// subscription's Name, else the bare type name.
func (b *Bus) NameOf(t reflect.Type) string { return b.nameOf(t) }

// Encode returns event as a message, as a route would publish it: encoded
// by the bus's Marshaler, named by NameOf, versioned by VersionOf, with a new id, and continuing
// the chain of ctx (correlation and causation ids) and its tenant ([TenantOf]).
func (b *Bus) Encode(ctx context.Context, event any) (*message.Message, error) {
	t := reflect.TypeOf(event)
	msg, err := newMessage(ctx, b.cfg.Marshaler, b.nameOf(t), b.VersionOf(t), event)
	if err == nil {
		b.inject(b.create(ctx, msg, nil), msg)
	}
	return msg, err
}

// Decode decodes a message's payload, encoded by the bus's Marshaler,
// into the value into points to.
func (b *Bus) Decode(payload []byte, into any) error { return b.cfg.Marshaler.Unmarshal(payload, into) }
