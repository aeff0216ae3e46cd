package fxbus

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

// This file puts a route's messages on the wire as CloudEvents 1.0; what
// reads them back, on every subscription, is in cloudevents_read.go.

// CloudEventsConfig is how a route writes its messages as CloudEvents.
// Make the option with [CloudEvents].
type CloudEventsConfig struct {
	// Source is the events' source attribute: a URI-reference naming the
	// context that produces them, such as "/orders" or
	// "urn:example:orders". Required.
	Source string
	// Structured writes each message in the structured content mode: the
	// whole event, attributes and data, in the payload as the JSON event
	// format ("application/cloudevents+json"). Default: the binary mode,
	// the data as the payload and each attribute in a header, named as
	// the broker's protocol binding says (see [CloudEventsBinding]).
	// Subscribers of fxcqrs releases before this one read the binary
	// mode, not the structured one.
	Structured bool
	// Subject returns an event's subject attribute (the part of the
	// source the event is about, such as an order's id); "" is none.
	// Default: none.
	Subject func(event any) string
}

// CloudEventsOption is a RouteOption that writes the route's messages as
// CloudEvents. Make one with [CloudEvents].
type CloudEventsOption struct{ cfg CloudEventsConfig }

// CloudEvents writes the route's messages as CloudEvents 1.0, for
// consumers in other languages (NServiceBus, Wolverine, MassTransit, any
// CloudEvents SDK). The attributes come from the message:
//
//   - id: the message id;
//   - source and subject: cfg's;
//   - type: the event's name on the wire, a dot and its version:
//     "OrderPlaced.v1", "OrderPlaced.v2" (see [MetadataVersion]);
//   - time: when the message was made;
//   - datacontenttype: the Marshaler's content type;
//   - partitionkey (the partitioning extension): the route's key ([KeyBy]);
//   - tenantid (an extension of fxcqrs's): the tenant ([MetadataTenant]),
//     absent for the default tenant;
//   - traceparent and tracestate (the distributed tracing extension): the
//     W3C trace context a Propagator put in the metadata (the otel
//     module's does).
//
// In the binary mode fxcqrs's own metadata travels beside the attributes,
// so that the messages read as before for every fxcqrs subscriber.
// Every subscription reads CloudEvents, in either mode, whatever its
// routes do.
func CloudEvents(cfg CloudEventsConfig) CloudEventsOption { return CloudEventsOption{cfg: cfg} }

func (o CloudEventsOption) applyRoute(r *route) { r.ce = &o.cfg }

// checkCloudEvents is NewRoute's check of a route's CloudEvents option.
func checkCloudEvents(r route) error {
	if r.ce != nil && r.ce.Source == "" {
		return fmt.Errorf("fxbus.Route[%s]: CloudEvents without a Source: name the producing context, such as \"/orders\"", r.typ)
	}
	return nil
}

// CloudEventsBinding is how a broker's protocol binding of CloudEvents
// names a binary-mode message's attributes in its headers (a Watermill
// message's metadata, which each adapter sends as headers). A publisher
// tells the bus its binding with a method CloudEventsBinding() that
// returns one (natsjs, amqpbus and kafkabus do); on any other publisher
// the bus uses [CloudEventsKafka]'s naming.
type CloudEventsBinding struct {
	// Prefix goes before each attribute's name: "ce-time".
	Prefix string
	// ContentType is the header that holds datacontenttype in the binary
	// mode, and the event format's media type in the structured mode;
	// "" when datacontenttype is an attribute like the others.
	ContentType string
	// FormatHeader is the header that holds the event format's media type
	// in the structured mode, when ContentType is "".
	FormatHeader string
	// PercentEncode percent-encodes attribute values, as NATS's binding
	// asks: a space, '"', '%' and anything outside printable ASCII.
	PercentEncode bool
}

// The bindings of the brokers that have one, per the CloudEvents 1.0
// protocol bindings.
var (
	// CloudEventsNATS is NATS's binding: "ce-" headers, datacontenttype
	// among them, values percent-encoded; the structured mode's
	// Content-Type header.
	CloudEventsNATS = CloudEventsBinding{Prefix: "ce-", FormatHeader: "Content-Type", PercentEncode: true}
	// CloudEventsKafka is Kafka's binding: "ce_" headers, datacontenttype
	// in the content-type header.
	CloudEventsKafka = CloudEventsBinding{Prefix: "ce_", ContentType: "content-type"}
	// CloudEventsAMQP is AMQP's binding: "cloudEvents:" application
	// properties, datacontenttype in the content-type property (the
	// adapter maps the content-type metadata to it).
	CloudEventsAMQP = CloudEventsBinding{Prefix: "cloudEvents:", ContentType: "content-type"}
)

type cloudEventsBinder interface {
	CloudEventsBinding() CloudEventsBinding
}

// ceBinding is the binding of the bus's publisher.
func (b *Bus) ceBinding() CloudEventsBinding {
	if p, ok := b.cfg.Publisher.(cloudEventsBinder); ok {
		return p.CloudEventsBinding()
	}
	return CloudEventsKafka
}

// ContentTypeCloudEventsJSON is the structured mode's media type: the JSON
// event format.
const ContentTypeCloudEventsJSON = "application/cloudevents+json"

// ceType is the type attribute of an event named name at version (from
// its metadata: "" is 1).
func ceType(name, version string) string {
	if version == "" {
		version = "1"
	}
	return name + ".v" + version
}

// nameAndVersion splits a type attribute into the event's name and its
// version: a trailing ".v" and a decimal integer from 1; without one the
// type is the name and the version 1.
func nameAndVersion(typ string) (name, version string) {
	i := strings.LastIndex(typ, ".v")
	if i <= 0 {
		return typ, "1"
	}
	v := typ[i+2:]
	if n, err := strconv.Atoi(v); err != nil || n < 1 || strconv.Itoa(n) != v {
		return typ, "1"
	}
	return typ[:i], v
}

// ceAttributes is an fxcqrs message's CloudEvents attributes, datacontenttype
// included, in the order the structured mode writes them.
func ceAttributes(cfg *CloudEventsConfig, msg *message.Message, event any, now time.Time) [][2]string {
	md := msg.Metadata
	attrs := [][2]string{
		{"specversion", "1.0"},
		{"id", msg.UUID},
		{"source", cfg.Source},
		{"type", ceType(md.Get(MetadataName), md.Get(MetadataVersion))},
		{"time", now.UTC().Format(time.RFC3339Nano)},
	}
	add := func(name, value string) {
		if value != "" {
			attrs = append(attrs, [2]string{name, value})
		}
	}
	add("datacontenttype", md.Get(MetadataContentType))
	if cfg.Subject != nil {
		add("subject", cfg.Subject(event))
	}
	add("partitionkey", md.Get(MetadataKey))
	add("tenantid", md.Get(MetadataTenant))
	add("traceparent", md.Get("traceparent"))
	add("tracestate", md.Get("tracestate"))
	return attrs
}

// toCloudEvent writes msg, a route's message of event, as a CloudEvent.
func (b *Bus) toCloudEvent(cfg *CloudEventsConfig, msg *message.Message, event any) {
	attrs := ceAttributes(cfg, msg, event, time.Now())
	bind := b.ceBinding()
	if !cfg.Structured {
		for _, a := range attrs {
			if a[0] == "datacontenttype" && bind.ContentType != "" {
				msg.Metadata.Set(bind.ContentType, a[1])
				continue
			}
			v := a[1]
			if bind.PercentEncode {
				v = percentEncode(v)
			}
			msg.Metadata.Set(bind.Prefix+a[0], v)
		}
		return
	}
	msg.Payload = structured(attrs, msg.Payload)
	msg.Metadata.Set(MetadataContentType, ContentTypeCloudEventsJSON)
	header := bind.ContentType
	if header == "" {
		header = bind.FormatHeader
	}
	msg.Metadata.Set(header, ContentTypeCloudEventsJSON+"; charset=UTF-8")
}

// structured is the JSON event format of attrs and data: data as JSON
// when datacontenttype says JSON (or is absent) and it is valid JSON, else
// as data_base64.
func structured(attrs [][2]string, data []byte) []byte {
	var sb strings.Builder
	sb.WriteByte('{')
	contentType := ""
	for i, a := range attrs {
		if i > 0 {
			sb.WriteByte(',')
		}
		k, _ := json.Marshal(a[0])
		v, _ := json.Marshal(a[1])
		sb.Write(k)
		sb.WriteByte(':')
		sb.Write(v)
		if a[0] == "datacontenttype" {
			contentType = a[1]
		}
	}
	if data != nil {
		if isJSON(contentType) && json.Valid(data) {
			sb.WriteString(`,"data":`)
			sb.Write(data)
		} else {
			sb.WriteString(`,"data_base64":"`)
			sb.WriteString(base64.StdEncoding.EncodeToString(data))
			sb.WriteByte('"')
		}
	}
	sb.WriteByte('}')
	return []byte(sb.String())
}

// isJSON reports whether a media type is JSON, as the JSON event format
// decides whether data is a JSON value: absent, application/json, text/json
// or any "+json" suffix.
func isJSON(mediaType string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(mediaType), ";")
	mt = strings.TrimSpace(mt)
	return mt == "" || mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// percentEncode encodes a header value as NATS's binding (and HTTP's)
// asks: a space, '"', '%' and every byte outside printable ASCII as %XY.
func percentEncode(s string) string {
	if !strings.ContainsFunc(s, needsPercent) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsPercent(rune(c)) {
			sb.WriteByte('%')
			sb.WriteByte(hex[c>>4])
			sb.WriteByte(hex[c&15])
			continue
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

func needsPercent(r rune) bool { return r <= ' ' || r == '"' || r == '%' || r >= 0x7f }

// percentDecode undoes percentEncode (and a quoted value, as older
// senders wrote them); a sequence that is not valid UTF-8 is an error.
func percentDecode(s string) (string, error) {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		uq, err := strconv.Unquote(s)
		if err != nil {
			return "", fmt.Errorf("quoted header value %q: %w", s, err)
		}
		s = uq
	}
	if !strings.Contains(s, "%") {
		return s, nil
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			out = append(out, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("header value %q: a truncated percent-encoding", s)
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("header value %q: %w", s, err)
		}
		out = append(out, byte(n))
		i += 2
	}
	if !utf8.Valid(out) {
		return "", errors.New("header value " + strconv.Quote(s) + ": percent-encoding that is not UTF-8")
	}
	return string(out), nil
}
