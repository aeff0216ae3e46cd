package fxbus

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
)

// fromCloudEvent makes a CloudEvent, in either content mode and in any
// broker's binding, an fxcqrs message, in place, before its subscription
// is found: the id becomes the message id, the type the event's name and
// version, datacontenttype the content type, partitionkey the key,
// tenantid the tenant ([MetadataTenant]), the trace context the
// traceparent and tracestate metadata a Propagator reads. The attributes stay in the metadata (a structured event's under
// the "ce_" prefix), for the dead letters and the repair tools. A message
// that is no CloudEvent is left as it is; one that claims to be but lacks
// a required attribute is an error.
func fromCloudEvent(msg *message.Message) error {
	if ct := formatType(msg.Metadata); ct != "" {
		return fromStructured(msg, ct)
	}
	if msg.Metadata.Get(MetadataName) != "" {
		return nil // fxcqrs's own binary mode carries its metadata beside the attributes
	}
	attrs, err := binaryAttributes(msg.Metadata)
	if err != nil || attrs == nil {
		return err
	}
	if ct := attrs["datacontenttype"]; ct == "" {
		if ct = headerContentType(msg.Metadata); ct != "" {
			attrs["datacontenttype"] = ct
		}
	}
	return adopt(msg, attrs, false)
}

// ceRequired are the attributes every CloudEvent has.
var ceRequired = []string{"specversion", "id", "source", "type"}

// adopt sets msg's fxcqrs metadata from a CloudEvent's attributes.
func adopt(msg *message.Message, attrs map[string]string, structured bool) error {
	for _, a := range ceRequired {
		if attrs[a] == "" {
			return fmt.Errorf("a CloudEvent without its %s attribute", a)
		}
	}
	if v := attrs["specversion"]; v != "1.0" && !strings.HasPrefix(v, "1.") {
		return fmt.Errorf("a CloudEvent of specversion %q: only 1.0 is read", v)
	}
	md := msg.Metadata
	setIfAbsent := func(key, value string) {
		if value != "" && md.Get(key) == "" {
			md.Set(key, value)
		}
	}
	msg.UUID = attrs["id"]
	name, version := nameAndVersion(attrs["type"])
	setIfAbsent(MetadataName, name)
	if version != "1" {
		setIfAbsent(MetadataVersion, version)
	}
	if structured {
		md.Set(MetadataContentType, attrs["datacontenttype"])
		if attrs["datacontenttype"] == "" {
			delete(md, MetadataContentType)
		}
	} else {
		setIfAbsent(MetadataContentType, attrs["datacontenttype"])
	}
	setIfAbsent(MetadataKey, attrs["partitionkey"])
	if tenant, ok := attrs["tenantid"]; ok {
		if _, has := md[MetadataTenant]; !has {
			md[MetadataTenant] = tenant // untrusted, empty too: the subscription resolves it
		}
	}
	setIfAbsent("traceparent", attrs["traceparent"])
	setIfAbsent("tracestate", attrs["tracestate"])
	return nil
}

// cePrefixes are the binary mode's header prefixes, lower case: HTTP's
// and NATS's (percent-encoded values), Kafka's, AMQP's two.
var cePrefixes = []struct {
	prefix  string
	encoded bool
}{{"ce-", true}, {"ce_", false}, {"cloudevents:", false}, {"cloudevents_", false}}

// binaryAttributes returns the attributes of a binary-mode CloudEvent's
// headers, by lower-case name: nil when there is no specversion among
// them (no CloudEvent).
func binaryAttributes(md message.Metadata) (map[string]string, error) {
	var attrs map[string]string
	for k, v := range md {
		lk := strings.ToLower(k)
		for _, p := range cePrefixes {
			if !strings.HasPrefix(lk, p.prefix) || len(lk) == len(p.prefix) {
				continue
			}
			if p.encoded {
				var err error
				if v, err = percentDecode(v); err != nil {
					return nil, fmt.Errorf("the CloudEvents header %s: %w", k, err)
				}
			}
			if attrs == nil {
				attrs = map[string]string{}
			}
			attrs[lk[len(p.prefix):]] = v
			break
		}
	}
	if attrs["specversion"] == "" {
		return nil, nil
	}
	return attrs, nil
}

// formatType is the media type of a structured-mode CloudEvent, from the
// binding's content type header or fxcqrs's own, or "".
func formatType(md message.Metadata) string {
	for k, v := range md {
		if k != MetadataContentType && !strings.EqualFold(k, "content-type") {
			continue
		}
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(v)), "application/cloudevents") {
			return v
		}
	}
	return ""
}

// headerContentType is the binding's content-type header (Kafka's, AMQP's
// property as amqpbus gives it), or "".
func headerContentType(md message.Metadata) string {
	for k, v := range md {
		if strings.EqualFold(k, "content-type") {
			return v
		}
	}
	return ""
}

// fromStructured reads a structured-mode CloudEvent: the JSON event
// format's attributes become metadata and its data the payload.
func fromStructured(msg *message.Message, mediaType string) error {
	mt, _, _ := strings.Cut(strings.ToLower(mediaType), ";")
	if mt = strings.TrimSpace(mt); mt != "application/cloudevents" && mt != ContentTypeCloudEventsJSON {
		return fmt.Errorf("a structured CloudEvent in the event format %q: only JSON is read", mt)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(msg.Payload, &fields); err != nil {
		return fmt.Errorf("a structured CloudEvent that is not a JSON object: %w", err)
	}
	attrs := make(map[string]string, len(fields))
	for k, raw := range fields {
		if k == "data" || k == "data_base64" {
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			s = string(raw) // an extension of another JSON type: its text
		}
		attrs[k] = s
	}
	data, err := structuredData(fields, attrs["datacontenttype"])
	if err != nil {
		return err
	}
	for k := range msg.Metadata {
		if strings.EqualFold(k, "content-type") {
			delete(msg.Metadata, k) // the payload is no longer the event format
		}
	}
	if err := adopt(msg, attrs, true); err != nil {
		return err
	}
	for k, v := range attrs {
		msg.Metadata.Set("ce_"+k, v)
	}
	msg.Payload = data
	return nil
}

// structuredData is the data of a JSON event format's fields: data_base64
// decoded; data as its JSON text when the content type is JSON, as the
// string's bytes when it is a JSON string of another content type.
func structuredData(fields map[string]json.RawMessage, contentType string) ([]byte, error) {
	raw, hasData := fields["data"]
	b64, hasB64 := fields["data_base64"]
	switch {
	case hasData && hasB64:
		return nil, errors.New("a structured CloudEvent with both data and data_base64")
	case hasB64:
		var s string
		if err := json.Unmarshal(b64, &s); err != nil {
			return nil, fmt.Errorf("a structured CloudEvent's data_base64 that is not a string: %w", err)
		}
		data, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("a structured CloudEvent's data_base64: %w", err)
		}
		return data, nil
	case !hasData:
		return nil, nil
	case !isJSON(contentType) && len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("a structured CloudEvent's data: %w", err)
		}
		return []byte(s), nil
	}
	return raw, nil
}
