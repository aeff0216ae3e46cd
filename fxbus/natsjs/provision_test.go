package natsjs_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A publish to a topic nobody provisioned fails naming it, and makes no
// stream: a mistyped topic does not swallow messages.
func TestPublishToAnUnprovisionedTopicFails(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "nobody")
	ps := pubsub(t, addr, "svc")
	err := ps.Publish(tp, msg("u-1", "x"))
	require.ErrorContains(t, err, "natsjs: publish to "+tp+": the topic is not provisioned")
	_, err = ps.PublishBatch(tp, []*message.Message{msg("u-2", "x")})
	require.ErrorContains(t, err, "the topic is not provisioned")
	_, err = jetStream(t, addr).StreamInfo(natsjs.StreamName(tp))
	require.ErrorIs(t, err, nats.ErrStreamNotFound, "no stream was made")
}

// A topic with dots (a subject) is kept in a stream whose name has
// underscores: a route to "payments.confirmed" works end to end.
func TestATopicWithDotsHasAStream(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	tp := topic(t, addr, "payments.confirmed")
	ps := pubsub(t, addr, "svc")
	require.NoError(t, ps.Provision(context.Background(), tp))
	info, err := jetStream(t, addr).StreamInfo(natsjs.StreamName(tp))
	require.NoError(t, err)
	assert.NotContains(t, info.Config.Name, ".")
	assert.Equal(t, []string{tp}, info.Config.Subjects)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.Subscribe(ctx, tp)
	require.NoError(t, err)
	require.NoError(t, ps.Publish(tp, msg("d-1", "dotted")))
	m := next(t, ch)
	assert.Equal(t, "dotted", string(m.Payload))
	m.Ack()
}

// CheckTopic refuses what no stream can take, naming the topic and the
// rule, and a second topic that would share a first one's stream.
func TestCheckTopic(t *testing.T) {
	t.Parallel()
	ps := pubsub(t, natsURL(t), "svc")
	for _, bad := range []string{"", "a b", "a.*", "a.>", "a..b", ".a", "a.", "a/b", `a\b`, "a\tb"} {
		err := ps.CheckTopic(bad)
		require.Error(t, err, "%q", bad)
		assert.ErrorContains(t, err, "the rule: a NATS subject without wildcards", "%q", bad)
	}
	require.NoError(t, ps.CheckTopic("orders_placed"))
	require.NoError(t, ps.CheckTopic("orders.placed.v1"))
	require.NoError(t, ps.CheckTopic("orders.placed.v1"), "the same topic again")
	err := ps.CheckTopic("orders_placed.v1")
	require.ErrorContains(t, err, `topics "orders.placed.v1" and "orders_placed.v1" would share the stream orders_placed_v1`)
	assert.Equal(t, "natsjs: a NATS subject", "natsjs: "+ps.Capabilities().TopicRule[:len("a NATS subject")])
}

// Capabilities states the server's limit, and a payload above it fails
// before it is sent, naming the limit; one at the limit is delivered
// whole.
func TestPayloadLimit(t *testing.T) {
	t.Parallel()
	addr := natsURL(t)
	ps, tp, ch := subscribed(t, "large")
	c := ps.Capabilities()
	assert.Equal(t, "nats-jetstream", c.Name)
	assert.True(t, c.OrderPerKey)
	assert.True(t, c.Parallel)
	conn, err := nats.Connect(addr)
	require.NoError(t, err)
	defer conn.Close()
	assert.Equal(t, int(conn.MaxPayload())-8<<10, c.MaxPayload, "the server's max_payload less 8 KiB for headers")

	err = ps.Publish(tp, message.NewMessage("big", make([]byte, c.MaxPayload+1)))
	require.ErrorContains(t, err, "above the limit of "+itoa(c.MaxPayload))
	_, err = ps.PublishBatch(tp, []*message.Message{message.NewMessage("big", make([]byte, c.MaxPayload+1))})
	require.ErrorContains(t, err, "above the limit of "+itoa(c.MaxPayload))

	payload := bytes.Repeat([]byte("x"), c.MaxPayload)
	require.NoError(t, ps.Publish(tp, msg("at-limit", string(payload))))
	m := next(t, ch)
	assert.Equal(t, len(payload), len(m.Payload))
	assert.True(t, bytes.Equal(payload, m.Payload), "delivered whole")
	m.Ack()
}
