package durable

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	nc "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// BenchmarkDrain: how fast b.N messages waiting in PostgreSQL reach NATS
// JetStream, timed from the start of the drain to the stream holding all
// of them. "relay" is fxcqrs's outbox relay with its defaults; "forwarder"
// is Watermill's forwarder component over watermill-sql with its defaults
// (the messages written through forwarder.NewPublisher, as a Watermill
// application writes its outbox), publishing through the same natsjs
// publisher. "relay-8-topics" and "forwarder-8-topics" are the same with
// the messages spread over 8 topics (one forwarder topic carries them
// all). Run with -benchtime 20000x; the figure is msgs/s.
func BenchmarkDrain(b *testing.B) {
	addr := natsURL(b)
	d := outboxtest.Open(b, fxoutbox.PostgreSQL)
	js := jetStream(b, addr)

	for _, n := range []int{1, 8} {
		name := func(side string) string {
			if n == 1 {
				return side
			}
			return fmt.Sprintf("%s-%d-topics", side, n)
		}
		b.Run(name("relay"), func(b *testing.B) { drainRelay(b, d, js, addr, n) })
		b.Run(name("forwarder"), func(b *testing.B) { drainForwarder(b, d, js, addr, n) })
	}
}

// drainTopics is n new topic names, their streams deleted when b ends.
func drainTopics(b *testing.B, js nc.JetStreamContext, n int) []string {
	topics := make([]string, n)
	for i := range topics {
		topics[i] = fmt.Sprintf("drain_%d", rand.Uint64())
		b.Cleanup(func() { _ = js.DeleteStream(topics[i]) })
	}
	return topics
}

// drainRelay is BenchmarkDrain's relay side over n topics.
func drainRelay(b *testing.B, d outboxtest.Database, js nc.JetStreamContext, addr string, n int) {
	topics := drainTopics(b, js, n)
	fillOutbox(b, d, topics, b.N)
	ps, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(b, err)
	defer ps.Close()
	require.NoError(b, ps.Provision(context.Background(), topics...))
	bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
	require.NoError(b, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(b, err)
	b.ResetTimer()
	start := time.Now()
	require.NoError(b, o.Start(context.Background()))
	waitStreams(b, js, topics, b.N)
	elapsed := time.Since(start)
	b.StopTimer()
	require.NoError(b, o.Stop(context.Background()))
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// drainForwarder is BenchmarkDrain's forwarder side over n topics: one
// forwarder topic carries them all, as a Watermill application's does.
func drainForwarder(b *testing.B, d outboxtest.Database, js nc.JetStreamContext, addr string, n int) {
	topics := drainTopics(b, js, n)
	fwdTopic := fmt.Sprintf("fwd_%d", rand.Uint64())
	log := watermill.NopLogger{}
	schema := wsql.DefaultPostgreSQLSchema{}
	pub, err := wsql.NewPublisher(wsql.BeginnerFromStdSQL(d.DB), wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, log)
	require.NoError(b, err)
	in := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: fwdTopic})
	// One message makes the table outside the transaction, as
	// AutoInitializeSchema requires; it is forwarded with the rest.
	require.NoError(b, in.Publish(topics[0], message.NewMessage(watermill.NewUUID(), []byte(`{"ID":0}`))))
	tx, err := d.DB.Begin()
	require.NoError(b, err)
	txPub, err := wsql.NewPublisher(wsql.TxFromStdSQL(tx), wsql.PublisherConfig{SchemaAdapter: schema}, log)
	require.NoError(b, err)
	txIn := forwarder.NewPublisher(txPub, forwarder.PublisherConfig{ForwarderTopic: fwdTopic})
	for i := 1; i < b.N; i++ {
		require.NoError(b, txIn.Publish(topics[i%n], message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"ID":%d}`, i))))
	}
	require.NoError(b, tx.Commit())

	sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(d.DB), wsql.SubscriberConfig{
		SchemaAdapter:    schema,
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
	}, log)
	require.NoError(b, err)
	out, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(b, err)
	require.NoError(b, out.Provision(context.Background(), topics...))
	fwd, err := forwarder.NewForwarder(sub, out, log, forwarder.Config{ForwarderTopic: fwdTopic})
	require.NoError(b, err)
	b.ResetTimer()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- fwd.Run(context.Background()) }()
	waitStreams(b, js, topics, b.N)
	elapsed := time.Since(start)
	b.StopTimer()
	require.NoError(b, fwd.Close())
	require.NoError(b, <-done)
	require.NoError(b, sub.Close())
	require.NoError(b, out.Close())
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// fillOutbox writes n outbox rows spread over topics in turn, in one
// transaction, as units of work would have.
func fillOutbox(b *testing.B, d outboxtest.Database, topics []string, n int) {
	b.Helper()
	tx, err := d.DB.Begin()
	require.NoError(b, err)
	stmt, err := tx.Prepare(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, ?)"))
	require.NoError(b, err)
	for i := range n {
		_, err := stmt.Exec(topics[i%len(topics)], fmt.Sprintf("m-%d-%d", rand.Uint64(), i), fmt.Appendf(nil, `{"ID":%d}`, i), `{"name":"OrderPlaced"}`)
		require.NoError(b, err)
	}
	require.NoError(b, stmt.Close())
	require.NoError(b, tx.Commit())
}

// waitStreams returns when the streams of topics hold n messages
// together: a benchmark's poll of the server, not a test's
// synchronisation.
func waitStreams(b *testing.B, js nc.JetStreamContext, topics []string, n int) {
	b.Helper()
	holds := func() uint64 {
		var sum uint64
		for _, topic := range topics {
			sum += streamHolds(b, js, topic)
		}
		return sum
	}
	deadline := time.Now().Add(5 * time.Minute)
	for holds() < uint64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("the streams of %v hold %d of %d messages after 5 minutes", topics, holds(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
