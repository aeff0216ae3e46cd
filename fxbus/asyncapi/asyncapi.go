// Package asyncapi writes a service's asynchronous contract, its bus's
// routes and subscriptions, as an AsyncAPI 3.0 document: a channel per
// topic, a message per event name with its headers (the fxcqrs wire
// metadata, the key when the route has one) and its payload's JSON
// Schema, made from the Go type; a send operation per route and a receive
// operation per subscription.
//
//	doc, err := asyncapi.Document(asyncapi.Info{Title: "billing", Version: "1.4.0"}, bus.Contract())
//
// The schemas come from a small walk over the Go types (encoding/json's
// rules: field names and omitempty from json tags, embedded structs
// flattened, time.Time as a date-time string, []byte as base64), not
// from a schema library, so that the package adds no dependency.
package asyncapi

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/fxcqrs/fxcqrs/fxbus"
)

// Info is the document's info object.
type Info struct {
	// Title is the service's name. Required.
	Title string
	// Version is the contract's (the service's) version. Required.
	Version string
	// Description says what the service does. Optional.
	Description string
}

// Document returns c as an AsyncAPI 3.0 document, in JSON.
func Document(info Info, c fxbus.Contract) ([]byte, error) {
	if info.Title == "" || info.Version == "" {
		return nil, fmt.Errorf("asyncapi.Document: Info needs a Title and a Version")
	}
	d := newDoc(info)
	for _, r := range c.Routes {
		ch := d.channel(r.Topic)
		msg := d.message(r.Type, r.Name, r.ContentType, r.Keyed, r.CloudEvents != nil)
		ch.messages[msg] = true
		d.operation("send", r.Topic, msg, fmt.Sprintf("%s is published to %s", msgTitle(r.Type, r.Name), r.Topic))
	}
	for _, s := range c.Subscriptions {
		ch := d.channel(s.Topic)
		msg := d.message(s.Type, s.Name, s.ContentType, false, false)
		ch.messages[msg] = true
		d.operation("receive", s.Topic, msg, fmt.Sprintf("%s is handled from %s; failures go to %s", msgTitle(s.Type, s.Name), s.Topic, s.DeadLetter))
	}
	return json.MarshalIndent(d.render(), "", "  ")
}

func msgTitle(t reflect.Type, name string) string {
	if name == "" {
		return "every event implementing " + t.String()
	}
	return name
}

type channel struct {
	address  string
	messages map[string]bool
}

type doc struct {
	info       Info
	channels   map[string]*channel
	operations map[string]map[string]any
	messages   map[string]map[string]any
	schemas    map[string]any
}

func newDoc(info Info) *doc {
	return &doc{
		info: info, channels: map[string]*channel{}, operations: map[string]map[string]any{},
		messages: map[string]map[string]any{}, schemas: map[string]any{},
	}
}

var unsafeID = regexp.MustCompile(`[^\w.\-]`)

// id makes s a component or channel key (^[\w\d\.\-_]+$).
func id(s string) string { return unsafeID.ReplaceAllString(s, "_") }

func (d *doc) channel(topic string) *channel {
	k := id(topic)
	if ch := d.channels[k]; ch != nil {
		return ch
	}
	ch := &channel{address: topic, messages: map[string]bool{}}
	d.channels[k] = ch
	return ch
}

// message adds the message of an event type and returns its key.
func (d *doc) message(t reflect.Type, name, contentType string, keyed, cloudEvents bool) string {
	if name == "" {
		name = t.String()
	}
	k := id(name)
	if m, ok := d.messages[k]; ok {
		if keyed {
			m["headers"] = headers(true, cloudEvents)
		}
		return k
	}
	d.schemas[k] = schemaOf(t)
	m := map[string]any{
		"name":          name,
		"title":         name,
		"summary":       "The event " + t.String() + " on the wire.",
		"contentType":   contentType,
		"headers":       headers(keyed, cloudEvents),
		"payload":       map[string]any{"$ref": "#/components/schemas/" + k},
		"correlationId": map[string]any{"location": "$message.header#/" + fxbus.MetadataCorrelationID},
	}
	d.messages[k] = m
	return k
}

// headers is the schema of the wire metadata.
func headers(keyed, cloudEvents bool) map[string]any {
	str := func(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }
	props := map[string]any{
		fxbus.MetadataName:          str("The event's name on the wire."),
		fxbus.MetadataContentType:   str("The payload's media type."),
		fxbus.MetadataCorrelationID: str("The id of the first message of the causal chain."),
		fxbus.MetadataCausationID:   str("The id of the message whose handling emitted this one."),
		fxbus.MetadataVersion:       str("The version of the event's type, from 1; absent: 1."),
	}
	required := []string{fxbus.MetadataName}
	if keyed {
		props[fxbus.MetadataKey] = str("The event's key: the messages of one key keep their order.")
	}
	if cloudEvents {
		props["ce_specversion"] = str("CloudEvents attributes, in the broker's protocol binding's naming (ce_, ce-, cloudEvents:).")
	}
	return map[string]any{"type": "object", "properties": props, "required": required}
}

func (d *doc) operation(action, topic, msg, summary string) {
	k := id(action + "_" + msg + "_" + topic)
	ch := id(topic)
	d.operations[k] = map[string]any{
		"action":   action,
		"summary":  summary,
		"channel":  map[string]any{"$ref": "#/channels/" + ch},
		"messages": []any{map[string]any{"$ref": "#/channels/" + ch + "/messages/" + msg}},
	}
}

func (d *doc) render() map[string]any {
	info := map[string]any{"title": d.info.Title, "version": d.info.Version}
	if d.info.Description != "" {
		info["description"] = d.info.Description
	}
	channels := map[string]any{}
	for k, ch := range d.channels {
		msgs := map[string]any{}
		for m := range ch.messages {
			msgs[m] = map[string]any{"$ref": "#/components/messages/" + m}
		}
		channels[k] = map[string]any{"address": ch.address, "messages": msgs}
	}
	ops := map[string]any{}
	for k, o := range d.operations {
		ops[k] = o
	}
	messages := map[string]any{}
	for k, m := range d.messages {
		messages[k] = m
	}
	return map[string]any{
		"asyncapi":           "3.0.0",
		"info":               info,
		"defaultContentType": "application/json",
		"channels":           channels,
		"operations":         ops,
		"components":         map[string]any{"messages": messages, "schemas": d.schemas},
	}
}

// schemaOf is t's JSON Schema, by encoding/json's rules.
func schemaOf(t reflect.Type) map[string]any { return walk(t, map[reflect.Type]bool{}) }

var jsonMarshaler = reflect.TypeFor[json.Marshaler]()

func walk(t reflect.Type, inProgress map[reflect.Type]bool) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.PkgPath() == "time" && t.Name() == "Time" {
		return map[string]any{"type": "string", "format": "date-time"}
	}
	if t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) {
		return map[string]any{"description": t.String() + " encodes itself"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": walk(t.Elem(), inProgress)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": walk(t.Elem(), inProgress)}
	case reflect.Struct:
		if inProgress[t] {
			return map[string]any{"description": "a recursive " + t.String()}
		}
		inProgress[t] = true
		defer delete(inProgress, t)
		props, required := map[string]any{}, []string{}
		fields(t, inProgress, props, &required)
		s := map[string]any{"type": "object", "properties": props, "title": t.Name()}
		if len(required) > 0 {
			s["required"] = required
		}
		return s
	}
	return map[string]any{} // an interface, a channel, a func: anything
}

func fields(t reflect.Type, inProgress map[reflect.Type]bool, props map[string]any, required *[]string) {
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				fields(ft, inProgress, props, required)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = walk(f.Type, inProgress)
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") && f.Type.Kind() != reflect.Pointer {
			*required = append(*required, name)
		}
	}
}
