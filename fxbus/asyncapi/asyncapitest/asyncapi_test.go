package asyncapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/asyncapi"
	"github.com/fxcqrs/fxcqrs/fxbus/protobuf"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The events of a service.
type (
	Money struct {
		Cents    int64  `json:"cents"`
		Currency string `json:"currency"`
	}
	Line struct {
		SKU   string `json:"sku"`
		Price Money  `json:"price"`
	}
	OrderPlaced struct {
		ID       string            `json:"id"`
		Lines    []Line            `json:"lines"`
		Placed   time.Time         `json:"placed"`
		Note     string            `json:"note,omitempty"`
		Tags     map[string]string `json:"tags,omitempty"`
		Attached []byte            `json:"attached,omitempty"`
		Parent   *OrderPlaced      `json:"parent,omitempty"`
	}
	OrderPaid   struct{ ID string }
	DomainEvent interface{ OrderID() string }
)

func (e OrderPlaced) OrderID() string { return e.ID }

func validator(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("testdata/asyncapi-3.0.0.json")
	require.NoError(t, err)
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("asyncapi-3.0.0.json", doc))
	s, err := c.Compile("asyncapi-3.0.0.json")
	require.NoError(t, err)
	return s
}

func validate(t *testing.T, s *jsonschema.Schema, doc []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	require.NoError(t, err)
	require.NoError(t, s.Validate(v), "%s", doc)
}

// A service's routes and subscriptions, every kind, make a document that
// the AsyncAPI 3.0 schema takes, with a channel per topic, a message per
// event name, keys and JSON Schemas from the Go types.
func TestDocumentValidates(t *testing.T) {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer gc.Close()
	bus, err := fxbus.New(fxbus.Config{Publisher: gc, Subscriber: gc},
		[]fxbus.Routing{
			fxbus.NewRoute[OrderPlaced]("orders", fxbus.KeyBy(func(e OrderPlaced) string { return e.ID })),
			fxbus.NewRoute[OrderPaid]("billing/paid", fxbus.Name("billing.order_paid"),
				fxbus.CloudEvents(fxbus.CloudEventsConfig{Source: "/billing"})),
			fxbus.NewRoute[DomainEvent]("audit"),
			fxbus.NewRoute[*wrapperspb.StringValue]("labels", fxbus.Marshal(protobuf.Marshaler{})),
		},
		[]fxbus.Subscription{
			fxbus.NewSubscription[OrderPlaced]("orders", fxbus.InOrder()),
			fxbus.NewSubscription[*wrapperspb.StringValue]("labels", fxbus.Marshal(protobuf.Marshaler{})),
		})
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.Stop(context.Background()) })
	doc, err := asyncapi.Document(asyncapi.Info{Title: "shop", Version: "1.0.0"}, bus.Contract())
	require.NoError(t, err)
	schema := validator(t)
	validate(t, schema, doc)
	broken, err := jsonschema.UnmarshalJSON(bytes.NewReader(bytes.Replace(doc, []byte(`"action": "send"`), []byte(`"action": "publish"`), 1)))
	require.NoError(t, err)
	assert.Error(t, schema.Validate(broken), "AsyncAPI 2's action is refused: the schema reaches the operations")

	var d struct {
		Channels   map[string]struct{ Address string }
		Operations map[string]struct{ Action string }
		Components struct {
			Messages map[string]struct {
				Name, ContentType string
				Headers           struct{ Properties map[string]any }
			}
			Schemas map[string]struct {
				Properties map[string]map[string]any
				Required   []string
			}
		}
	}
	require.NoError(t, json.Unmarshal(doc, &d))
	assert.Equal(t, "billing/paid", d.Channels["billing_paid"].Address)
	assert.Len(t, d.Channels, 4)
	assert.Len(t, d.Operations, 6, "a send per route, a receive per subscription")
	placed := d.Components.Messages["OrderPlaced"]
	assert.Contains(t, placed.Headers.Properties, fxbus.MetadataKey, "a keyed route's key")
	assert.Equal(t, "application/protobuf", d.Components.Messages["StringValue"].ContentType)
	s := d.Components.Schemas["OrderPlaced"]
	assert.Equal(t, []string{"id", "lines", "placed"}, s.Required)
	assert.Equal(t, "date-time", s.Properties["placed"]["format"])
	assert.Equal(t, "array", s.Properties["lines"]["type"])
	assert.Equal(t, "base64", s.Properties["attached"]["contentEncoding"])
}

// A document the schema refuses is refused: the validation can fail.
func TestValidatorRefuses(t *testing.T) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(`{"asyncapi":"3.0.0","info":{"title":"x"},"channels":{"a b":{}}}`)))
	require.NoError(t, err)
	assert.Error(t, validator(t).Validate(v))
}
