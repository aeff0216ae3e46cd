package fxbus_test

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// golden reads a message of testdata/cloudevents: headers, a blank line,
// the payload; lines that start with # are comments.
func golden(t *testing.T, path string) *message.Message {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	head, body, ok := strings.Cut(string(raw), "\n\n")
	require.True(t, ok, "%s: no blank line before the payload", path)
	msg := message.NewMessage("", []byte(strings.TrimSpace(body)))
	for line := range strings.SplitSeq(head, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		require.True(t, ok, "%s: %q is no header", path, line)
		msg.Metadata.Set(k, v)
	}
	return msg
}

// mdRecorder is a Propagator that hands over the metadata of each message
// a handler gets.
type mdRecorder struct{ got chan message.Metadata }

func (r mdRecorder) Inject(ctx context.Context, md message.Metadata) {
	if tp, _ := ctx.Value(traceKey{}).(string); tp != "" {
		md.Set("traceparent", tp)
	}
}

func (r mdRecorder) Extract(ctx context.Context, md message.Metadata) context.Context {
	if r.got != nil {
		r.got <- maps.Clone(md)
	}
	return context.WithValue(ctx, traceKey{}, md.Get("traceparent"))
}

type traceKey struct{}

// The messages of the CloudEvents protocol bindings' examples (NATS,
// Kafka, AMQP; binary and structured) are handled by a subscription: the
// type names the event, the id is the message id, the data is the event.
func TestCloudEventsGoldenMessages(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/cloudevents/*.txt")
	require.NoError(t, err)
	require.Len(t, files, 6)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			gc := goChannel(t)
			tp := topic(t, "golden")
			type got struct {
				ev OrderPlaced
				id string
			}
			in := newInbox[got]()
			mds := make(chan message.Metadata, 1)
			service(t, gc, gc,
				fxbus.Subscribe[OrderPlaced](tp, fxbus.Name("com.example.someevent")),
				fxbus.AsPropagator(func() fxbus.Propagator { return mdRecorder{got: mds} }),
				fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
					return func(ctx context.Context, e OrderPlaced) error {
						in.add(got{e, fxbus.MessageID(ctx)})
						return nil
					}
				}),
			)
			require.NoError(t, gc.Publish(tp, golden(t, file)))
			g := in.wait(t, 1)[0]
			assert.Equal(t, OrderPlaced{ID: 7, Label: "golden"}, g.ev)
			assert.Equal(t, "1234-1234-1234", g.id, "the CloudEvent's id is the message id")
			md := <-mds
			assert.Equal(t, "com.example.someevent", md.Get(fxbus.MetadataName))
			assert.Contains(t, md.Get(fxbus.MetadataContentType), "application/json")
		})
	}
}

// A route with CloudEvents writes the binary mode's attributes beside
// fxcqrs's own metadata, or the structured mode's JSON event format; a
// subscription reads either back, key, version and trace context
// included.
func TestCloudEventsRoundTrip(t *testing.T) {
	t.Parallel()
	for _, structured := range []bool{false, true} {
		t.Run(map[bool]string{false: "binary", true: "structured"}[structured], func(t *testing.T) {
			t.Parallel()
			gc := goChannel(t)
			out, back := topic(t, "ce_out"), topic(t, "ce_back")
			raw, err := gc.Subscribe(context.Background(), out)
			require.NoError(t, err)
			in := newInbox[OrderPlaced]()
			mds := make(chan message.Metadata, 1)
			m := service(t, gc, gc,
				fxbus.Route[OrderPlaced](out, fxbus.KeyBy(func(e OrderPlaced) string { return "order-1" }), fxbus.Version(2),
					fxbus.CloudEvents(fxbus.CloudEventsConfig{
						Source: "/orders", Structured: structured,
						Subject: func(e any) string { return e.(OrderPlaced).Label },
					})),
				fxbus.Subscribe[OrderPlaced](back, fxbus.Version(2)),
				fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
					return func(ctx context.Context, c PlaceOrder) error {
						fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID, Label: "a b"})
						return nil
					}
				}),
				fxbus.AsPropagator(func() fxbus.Propagator { return mdRecorder{got: mds} }),
				fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
					return func(ctx context.Context, e OrderPlaced) error {
						if fxbus.MessageID(ctx) != "" { // the subscription's, not the emitting call's
							in.add(e)
						}
						return nil
					}
				}),
			)
			ctx := context.WithValue(context.Background(), traceKey{}, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			require.NoError(t, fxcqrs.Exec(ctx, m, PlaceOrder{ID: 3}))
			msg := <-raw
			msg.Ack()
			md := msg.Metadata
			if structured {
				assert.Equal(t, fxbus.ContentTypeCloudEventsJSON+"; charset=UTF-8", md.Get("content-type"))
				var env map[string]any
				require.NoError(t, json.Unmarshal(msg.Payload, &env))
				assert.Equal(t, "1.0", env["specversion"])
				assert.Equal(t, msg.UUID, env["id"])
				assert.Equal(t, "/orders", env["source"])
				assert.Equal(t, "OrderPlaced.v2", env["type"])
				assert.Equal(t, "a b", env["subject"])
				assert.Equal(t, "order-1", env["partitionkey"])
				assert.Equal(t, "application/json", env["datacontenttype"])
				assert.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", env["traceparent"])
				assert.Equal(t, map[string]any{"id": float64(3), "label": "a b"}, env["data"])
				_, err := time.Parse(time.RFC3339Nano, env["time"].(string))
				assert.NoError(t, err)
			} else {
				// No broker binding on a GoChannel: Kafka's naming.
				assert.Equal(t, "1.0", md.Get("ce_specversion"))
				assert.Equal(t, msg.UUID, md.Get("ce_id"))
				assert.Equal(t, "/orders", md.Get("ce_source"))
				assert.Equal(t, "OrderPlaced.v2", md.Get("ce_type"))
				assert.Equal(t, "a b", md.Get("ce_subject"))
				assert.Equal(t, "order-1", md.Get("ce_partitionkey"))
				assert.Equal(t, "application/json", md.Get("content-type"))
				assert.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", md.Get("ce_traceparent"))
				assert.Equal(t, "OrderPlaced", md.Get(fxbus.MetadataName), "fxcqrs's own metadata stays beside")
				assert.JSONEq(t, `{"id":3,"label":"a b"}`, string(msg.Payload))
			}

			// What a foreign producer of the same sends: no fxcqrs metadata.
			foreign := message.NewMessage("", msg.Payload)
			for k, v := range md {
				if strings.HasPrefix(k, "ce_") || k == "content-type" {
					foreign.Metadata.Set(k, v)
				}
			}
			require.NoError(t, gc.Publish(back, foreign))
			assert.Equal(t, OrderPlaced{ID: 3, Label: "a b"}, in.wait(t, 1)[0])
			got := <-mds
			assert.Equal(t, "OrderPlaced", got.Get(fxbus.MetadataName))
			assert.Equal(t, "order-1", got.Get(fxbus.MetadataKey))
			assert.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", got.Get("traceparent"))
			// The foreign copy has no fxcqrs metadata: its version comes
			// from the type's suffix alone, and matches the subscription's
			// (version 2; a version newer than the subscription's would be
			// dead-lettered, see TestSubscriptionUpcasts).
			assert.Equal(t, "2", got.Get(fxbus.MetadataVersion), "the type's version suffix is the message's version")
		})
	}
}

// A CloudEvent that lacks a required attribute, or is in an event format
// the bus does not read, goes to the dead letter at once.
func TestCloudEventsMalformed(t *testing.T) {
	t.Parallel()
	cases := map[string]*message.Message{
		"no source": func() *message.Message {
			m := message.NewMessage("", []byte(`{}`))
			m.Metadata = message.Metadata{"ce_specversion": "1.0", "ce_id": "1", "ce_type": "OrderPlaced"}
			return m
		}(),
		"avro": func() *message.Message {
			m := message.NewMessage("", []byte(`x`))
			m.Metadata = message.Metadata{"content-type": "application/cloudevents+avro"}
			return m
		}(),
		"bad percent-encoding": func() *message.Message {
			m := message.NewMessage("", []byte(`{}`))
			m.Metadata = message.Metadata{"ce-specversion": "1.0", "ce-id": "%C0%A0", "ce-source": "/s", "ce-type": "OrderPlaced"}
			return m
		}(),
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			gc := goChannel(t)
			tp := topic(t, "malformed")
			dead := deadLetters(t, gc, tp+"_poison")
			service(t, gc, gc, fxbus.Subscribe[OrderPlaced](tp),
				fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
					return func(context.Context, OrderPlaced) error { return nil }
				}))
			require.NoError(t, gc.Publish(tp, msg))
			d := <-dead
			d.Ack()
			assert.Contains(t, d.Metadata.Get("reason_poisoned"), "CloudEvent")
		})
	}
}

func TestCloudEventsNeedsSource(t *testing.T) {
	t.Parallel()
	r := fxbus.NewRoute[OrderPlaced]("orders", fxbus.CloudEvents(fxbus.CloudEventsConfig{}))
	_, err := fxbus.New(fxbus.Config{Publisher: goChannel(t)}, []fxbus.Routing{r}, nil)
	require.ErrorContains(t, err, "fxbus.Route[fxbus_test.OrderPlaced]: CloudEvents without a Source")
}
