package asyncapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/asyncapi"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Version 3 of a shipped event, upcast from 1; a refund at version 2
// with no upcasters, only read; an invoice at version 2, only written.
type (
	Shipped  struct{ ID string }
	Refunded struct{ ID string }
	Invoiced struct{ ID string }
)

// The document states each message's version: the title names it, and
// the version header's schema takes exactly the versions the service
// writes or reads (a message without the header is version 1), so that
// a message of a version the service would dead-letter fails it.
func TestDocumentVersions(t *testing.T) {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer gc.Close()
	up := func(p []byte) ([]byte, error) { return p, nil }
	bus, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc, Upcasters: []fxbus.Upcaster{
		{Name: "Shipped", From: 1, Up: up}, {Name: "Shipped", From: 2, Up: up},
	}},
		[]fxbus.Routing{
			fxbus.NewRoute[Shipped]("shipping", fxbus.Version(3)),
			fxbus.NewRoute[Invoiced]("billing", fxbus.Version(2)),
			fxbus.NewRoute[OrderPaid]("billing"),
			fxbus.NewRoute[DomainEvent]("audit"),
		},
		[]fxbus.Subscription{
			fxbus.NewSubscription[Shipped]("shipping", fxbus.Version(3)),
			fxbus.NewSubscription[Refunded]("refunds", fxbus.Version(2)),
		})
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.Stop(context.Background()) })
	doc, err := asyncapi.Document(asyncapi.Info{Title: "shop", Version: "1.0.0"}, bus.Contract())
	require.NoError(t, err)
	validate(t, validator(t), doc)

	var d struct {
		Operations map[string]struct{ Summary string }
		Components struct {
			Messages map[string]struct {
				Name, Title string
				Headers     json.RawMessage
			}
		}
	}
	require.NoError(t, json.Unmarshal(doc, &d))
	titles := map[string]string{}
	for k, m := range d.Components.Messages {
		titles[k] = m.Name + " | " + m.Title
	}
	assert.Equal(t, map[string]string{
		"Shipped":                  "Shipped | Shipped v3",
		"Refunded":                 "Refunded | Refunded v2",
		"Invoiced":                 "Invoiced | Invoiced v2",
		"OrderPaid":                "OrderPaid | OrderPaid v1",
		"asyncapitest.DomainEvent": "asyncapitest.DomainEvent | asyncapitest.DomainEvent",
	}, titles, "the name stays the wire name; the title has the version")
	assert.Contains(t, d.Operations["receive_Shipped_shipping"].Summary, "versions 1 to 3")

	accepts := func(msg string, headers map[string]string) bool {
		t.Helper()
		c := jsonschema.NewCompiler()
		s, err := jsonschema.UnmarshalJSON(bytes.NewReader(d.Components.Messages[msg].Headers))
		require.NoError(t, err)
		require.NoError(t, c.AddResource("headers.json", s))
		schema, err := c.Compile("headers.json")
		require.NoError(t, err)
		v := map[string]any{}
		for k, x := range headers {
			v[k] = x
		}
		return schema.Validate(v) == nil
	}
	for _, c := range []struct {
		msg, version string // "": no version header
		ok           bool
	}{
		{"Shipped", "", true},
		{"Shipped", "1", true},
		{"Shipped", "3", true},
		{"Shipped", "4", false},
		{"Refunded", "2", true},
		{"Refunded", "1", false},
		{"Refunded", "", false},
		{"Invoiced", "2", true},
		{"Invoiced", "1", false},
		{"Invoiced", "", false},
		{"OrderPaid", "1", true},
		{"OrderPaid", "2", false},
		{"asyncapitest.DomainEvent", "7", true},
		{"asyncapitest.DomainEvent", "v7", false},
	} {
		h := map[string]string{fxbus.MetadataName: c.msg}
		if c.version != "" {
			h[fxbus.MetadataVersion] = c.version
		}
		assert.Equal(t, c.ok, accepts(c.msg, h), "%s version %q", c.msg, c.version)
	}
}
