// Package asyncapi writes a service's asynchronous contract, its bus's
// routes and subscriptions, as an AsyncAPI 3.0 document: a channel per
// topic, a message per event name with its headers (the fxcqrs wire
// metadata, the key when the route has one) and its payload's JSON
// Schema, made from the Go type; a send operation per route and a receive
// operation per subscription.
//
// A message's name is the event's name on the wire, the same in every
// version; its title adds the version ("OrderPlaced v2"), and its
// headers' schema gives the version header ([fxbus.MetadataVersion]) as
// the one version the routes write (a const) or the versions the
// subscriptions read (an enum, from the oldest their upcasters reach).
//
//	doc, err := asyncapi.Document(asyncapi.Info{Title: "billing", Version: "1.4.0"}, bus.Contract())
//
// The schemas come from a small walk over the Go types (encoding/json's
// rules: field names and omitempty from json tags, embedded structs
// flattened, time.Time as a date-time string, []byte as base64), not
// from a schema library, so that the package adds no dependency.
package asyncapi

import (
	"cmp"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
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
		m := d.message(r.Type, r.Name, r.ContentType)
		m.keyed = m.keyed || r.Keyed
		m.cloudEvents = m.cloudEvents || r.CloudEvents != nil
		m.sends = r.Version
		ch.messages[m.key] = true
		d.operation("send", r.Topic, m.key, fmt.Sprintf("%s is published to %s", msgTitle(r.Type, r.Name, r.Version), r.Topic))
	}
	for _, s := range c.Subscriptions {
		ch := d.channel(s.Topic)
		m := d.message(s.Type, s.Name, s.ContentType)
		m.reads(s.Oldest, s.Version)
		ch.messages[m.key] = true
		what := msgTitle(s.Type, s.Name, s.Version)
		if s.Oldest > 0 && s.Oldest < s.Version {
			what += fmt.Sprintf(" (versions %d to %d, the older ones upcast)", s.Oldest, s.Version)
		}
		d.operation("receive", s.Topic, m.key, fmt.Sprintf("%s is handled from %s; failures go to %s", what, s.Topic, s.DeadLetter))
	}
	return json.MarshalIndent(d.render(), "", "  ")
}

// msgTitle is a message's human-readable title: its name and version.
func msgTitle(t reflect.Type, name string, version int) string {
	if name == "" {
		return "every event implementing " + t.String()
	}
	if version < 1 {
		version = 1
	}
	return fmt.Sprintf("%s v%d", name, version)
}

type channel struct {
	address  string
	messages map[string]bool
}

type doc struct {
	info       Info
	channels   map[string]*channel
	operations map[string]map[string]any
	messages   map[string]*msg
	schemas    map[string]any
}

// msg is what the document says of one event name: gathered from its
// routes and subscriptions, rendered at the end.
type msg struct {
	key, name, contentType string
	typ                    reflect.Type
	keyed, cloudEvents     bool
	sends                  int // the version the routes write; 0: none, or an interface route
	oldest, current        int // the versions the subscriptions read; 0: none
}

// reads adds the versions a subscription reads.
func (m *msg) reads(oldest, current int) {
	if current < 1 {
		return
	}
	oldest = cmp.Or(oldest, current)
	if m.current == 0 {
		m.oldest, m.current = oldest, current
		return
	}
	m.oldest, m.current = min(m.oldest, oldest), max(m.current, current)
}

func newDoc(info Info) *doc {
	return &doc{
		info: info, channels: map[string]*channel{}, operations: map[string]map[string]any{},
		messages: map[string]*msg{}, schemas: map[string]any{},
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

// message returns the message of an event type, added on first use.
func (d *doc) message(t reflect.Type, name, contentType string) *msg {
	if name == "" {
		name = t.String()
	}
	k := id(name)
	if m, ok := d.messages[k]; ok {
		return m
	}
	d.schemas[k] = schemaOf(t)
	m := &msg{key: k, name: name, contentType: contentType, typ: t}
	d.messages[k] = m
	return m
}

// version is the version of the message's type: the one its routes
// write and its subscriptions decode (fxbus makes them agree); 0 when
// only an interface route sends it.
func (m *msg) version() int { return max(m.sends, m.current) }

// render is the message object. Its name stays the event's name on the
// wire, the [fxbus.MetadataName] a consumer matches, the same in every
// version; the version is in the title, for people, and in the headers'
// schema, for machines: the [fxbus.MetadataVersion] header is the one
// version the routes write (const), or the versions the subscriptions
// read (enum, from the oldest their upcasters reach).
func (m *msg) render() map[string]any {
	title, summary := m.name, "The event "+m.typ.String()+" on the wire."
	if v := m.version(); v > 0 {
		title = msgTitle(m.typ, m.name, v)
		summary = fmt.Sprintf("The event %s, version %d, on the wire.", m.typ, v)
	}
	return map[string]any{
		"name":          m.name,
		"title":         title,
		"summary":       summary,
		"contentType":   m.contentType,
		"headers":       m.headers(),
		"payload":       map[string]any{"$ref": "#/components/schemas/" + m.key},
		"correlationId": map[string]any{"location": "$message.header#/" + fxbus.MetadataCorrelationID},
	}
}

// headers is the schema of the wire metadata.
func (m *msg) headers() map[string]any {
	str := func(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }
	props := map[string]any{
		fxbus.MetadataName:          str("The event's name on the wire."),
		fxbus.MetadataContentType:   str("The payload's media type."),
		fxbus.MetadataCorrelationID: str("The id of the first message of the causal chain."),
		fxbus.MetadataCausationID:   str("The id of the message whose handling emitted this one."),
		fxbus.MetadataVersion:       m.versionHeader(),
	}
	required := []string{fxbus.MetadataName}
	if (m.sends > 0 && m.current == 0) || m.oldest > 1 {
		// Routes always write it; a reader that cannot take version 1
		// needs it, as a message without it is version 1.
		required = append(required, fxbus.MetadataVersion)
	}
	if m.keyed {
		props[fxbus.MetadataKey] = str("The event's key: the messages of one key keep their order.")
	}
	if m.cloudEvents {
		props["ce_specversion"] = str("CloudEvents attributes, in the broker's protocol binding's naming (ce_, ce-, cloudEvents:); the type attribute is the name, a dot and the version: " + m.name + ".v" + strconv.Itoa(max(m.version(), 1)) + ".")
	}
	return map[string]any{"type": "object", "properties": props, "required": required}
}

// versionHeader is the schema of the version header: what the routes
// write and the subscriptions read.
func (m *msg) versionHeader() map[string]any {
	const absent = " A message without it is version 1."
	switch {
	case m.current > 0:
		var accepted []any
		for v := m.oldest; v <= m.current; v++ {
			accepted = append(accepted, strconv.Itoa(v))
		}
		desc := fmt.Sprintf("The version of the event's type: version %d is read as it is", m.current)
		if m.oldest < m.current {
			desc += fmt.Sprintf(", versions %d to %d are upcast to it", m.oldest, m.current-1)
		}
		desc += "; any other is dead-lettered."
		if m.sends > 0 {
			desc += fmt.Sprintf(" The routes write version %d.", m.sends)
		}
		if m.oldest == 1 {
			desc += absent
		}
		if len(accepted) == 1 {
			return map[string]any{"type": "string", "const": accepted[0], "description": desc}
		}
		return map[string]any{"type": "string", "enum": accepted, "description": desc}
	case m.sends > 0:
		return map[string]any{"type": "string", "const": strconv.Itoa(m.sends), "description": "The version of the event's type: the routes write version " + strconv.Itoa(m.sends) + "."}
	}
	return map[string]any{"type": "string", "pattern": "^[1-9][0-9]*$", "description": "The version of each event's type, from 1." + absent}
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
		messages[k] = m.render()
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
