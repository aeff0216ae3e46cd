package fxoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	nc "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// fill writes n outbox rows of one topic, as units of work would have.
func fill(b *testing.B, d database, topic string, n int) { fillLanes(b, d, topic, n, 1) }

// fillLanes writes n keyed rows of one topic over lanes lanes, 64 keys
// each in its lane by LaneOf, as units of work would have.
func fillLanes(b *testing.B, d database, topic string, n, lanes int) {
	b.Helper()
	tx, err := d.DB.Begin()
	require.NoError(b, err)
	stmt, err := tx.Prepare(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata) VALUES (?, ?, ?, ?, ?)"))
	require.NoError(b, err)
	for i := range n {
		key := fmt.Sprintf("order-%d", i%64)
		_, err := stmt.Exec(topic, fxoutbox.LaneOf(key, lanes), fmt.Sprintf("m-%d-%d", rand.Uint64(), i), []byte(`{"id":1}`), `{"name":"OrderPlaced","key":"`+key+`"}`)
		require.NoError(b, err)
	}
	require.NoError(b, stmt.Close())
	require.NoError(b, tx.Commit())
}

// BenchmarkRelayDrain: how fast the relay empties an outbox of b.N rows of
// one topic into NATS JetStream, on PostgreSQL, against the limit measured
// in the same run: a bare loop of the same SELECT (after the last batch,
// see bareBatch), JetStream's asynchronous publish of the batch, and one
// DELETE of its ids; and the
// same over 8 topics (relay-8-topics against limit-8-topics). Run with
// -benchtime 20000x; the figure is rows/s.
func BenchmarkRelayDrain(b *testing.B) {
	addr := env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	reachable(b, "FXCQRS_NATS_URL", strings.TrimPrefix(addr, "nats://"))
	d := openDatabase(b, fxoutbox.PostgreSQL)
	conn, err := nc.Connect(addr)
	require.NoError(b, err)
	defer conn.Close()
	js, err := conn.JetStream(nc.PublishAsyncMaxPending(4096))
	require.NoError(b, err)

	relay := func(lanes int) func(b *testing.B) {
		return func(b *testing.B) {
			topic := fmt.Sprintf("drain_%d", rand.Uint64())
			defer func() { _ = js.DeleteStream(topic) }()
			fillLanes(b, d, topic, b.N, lanes)
			provisionStream(b, addr, topic)
			ps, err := natsjs.New(natsjs.Config{URL: addr})
			require.NoError(b, err)
			defer ps.Close()
			bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
			require.NoError(b, err)
			o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{Lanes: lanes}}, nil)
			require.NoError(b, err)
			b.ResetTimer()
			start := time.Now()
			require.NoError(b, o.Start(context.Background()))
			for count(b, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") > 0 {
				time.Sleep(time.Millisecond) // a benchmark's poll, not synchronisation
			}
			elapsed := time.Since(start)
			b.StopTimer()
			require.NoError(b, o.Stop(context.Background()))
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
		}
	}
	b.Run("relay", relay(1))
	// Keyed rows over 8 lanes, one relay: on 2 cores, no speed-up is
	// expected; the figure says what the lanes cost.
	b.Run("relay-8-lanes", relay(8))

	// The same rows spread over 8 topics (one relay, 8 lanes of one
	// lane each), against limit-8-topics: "rows/s" until the outbox is
	// empty, "delivered-rows/s" until the streams hold every row (the
	// relay's last window is deleted up to ProgressInterval later).
	b.Run("relay-8-topics", func(b *testing.B) {
		topics := drainTopics(b, js, addr, 8)
		fillTopics(b, d, topics, b.N)
		ps, err := natsjs.New(natsjs.Config{URL: addr})
		require.NoError(b, err)
		defer ps.Close()
		bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
		require.NoError(b, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
		require.NoError(b, err)
		b.ResetTimer()
		start := time.Now()
		require.NoError(b, o.Start(context.Background()))
		for streamsHold(b, js, topics) < uint64(b.N) {
			time.Sleep(2 * time.Millisecond) // a benchmark's poll, not synchronisation
		}
		delivered := time.Since(start)
		for count(b, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") > 0 {
			time.Sleep(time.Millisecond) // a benchmark's poll, not synchronisation
		}
		elapsed := time.Since(start)
		b.StopTimer()
		require.NoError(b, o.Stop(context.Background()))
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
		b.ReportMetric(float64(b.N)/delivered.Seconds(), "delivered-rows/s")
	})

	// The bare loop over 8 topics, a batch of each in turn: the limit a
	// relay of 8 topics is held to.
	b.Run("limit-8-topics", func(b *testing.B) {
		topics := drainTopics(b, js, addr, 8)
		fillTopics(b, d, topics, b.N)
		b.ResetTimer()
		start := time.Now()
		after := map[string]int64{}
		for left := slices.Clone(topics); len(left) > 0; {
			for i := 0; i < len(left); {
				last := bareBatch(b, d, js, left[i], after[left[i]])
				if last == 0 {
					left = slices.Delete(left, i, i+1)
					continue
				}
				after[left[i]] = last
				i++
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
	})

	b.Run("limit", func(b *testing.B) {
		topic := fmt.Sprintf("drain_%d", rand.Uint64())
		_, err := js.AddStream(&nc.StreamConfig{Name: topic, Subjects: []string{topic}})
		require.NoError(b, err)
		defer func() { _ = js.DeleteStream(topic) }()
		fill(b, d, topic, b.N)
		b.ResetTimer()
		start := time.Now()
		for after := int64(0); ; {
			if after = bareBatch(b, d, js, topic, after); after == 0 {
				break
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
	})
}

// BenchmarkRelayDrainAMQP is BenchmarkRelayDrain on RabbitMQ with
// publisher confirms, into a durable queue bound to the topic's exchange:
// the relay (amqpbus's PublishBatch) against the limit, the same SELECT,
// the batch published on one confirm-mode channel of amqp091, its
// confirms awaited, one DELETE.
func BenchmarkRelayDrainAMQP(b *testing.B) {
	addr := env("FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	u, err := url.Parse(addr)
	require.NoError(b, err)
	reachable(b, "FXCQRS_AMQP_URL", u.Host)
	d := openDatabase(b, fxoutbox.PostgreSQL)
	provisioned := func(b *testing.B) (string, *amqpbus.PubSub) {
		topic := fmt.Sprintf("drain_%d", rand.Uint64())
		ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "bench"})
		require.NoError(b, err)
		require.NoError(b, ps.ProvisionConsumer(context.Background(), topic))
		b.Cleanup(func() { forgetAMQPQueue(addr, topic, "bench"); _ = ps.Close() })
		return topic, ps
	}

	b.Run("relay", func(b *testing.B) {
		topic, ps := provisioned(b)
		fill(b, d, topic, b.N)
		bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
		require.NoError(b, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
		require.NoError(b, err)
		b.ResetTimer()
		start := time.Now()
		require.NoError(b, o.Start(context.Background()))
		for count(b, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") > 0 {
			time.Sleep(time.Millisecond) // a benchmark's poll, not synchronisation
		}
		elapsed := time.Since(start)
		b.StopTimer()
		require.NoError(b, o.Stop(context.Background()))
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
	})

	b.Run("limit", func(b *testing.B) {
		topic, _ := provisioned(b)
		fill(b, d, topic, b.N)
		conn, err := amqp.Dial(addr)
		require.NoError(b, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(b, err)
		require.NoError(b, ch.Confirm(false))
		sel := d.Dialect.Rebind("SELECT id, message_id, payload FROM fxcqrs_outbox WHERE topic = ? AND lane = 0 ORDER BY id LIMIT 100") // the relay's index, (topic, lane, id)
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		for {
			rows, err := d.DB.Query(sel, topic)
			require.NoError(b, err)
			var ids []string
			var confirms []*amqp.DeferredConfirmation
			for rows.Next() {
				var (
					id      int64
					msgID   string
					payload []byte
				)
				require.NoError(b, rows.Scan(&id, &msgID, &payload))
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, topic, "", false, false, amqp.Publishing{
					MessageId: msgID, Body: payload, DeliveryMode: amqp.Persistent,
				})
				require.NoError(b, err)
				confirms = append(confirms, dc)
				ids = append(ids, fmt.Sprint(id))
			}
			require.NoError(b, rows.Err())
			_ = rows.Close()
			if len(ids) == 0 {
				break
			}
			for _, dc := range confirms {
				ok, err := dc.WaitContext(ctx)
				require.NoError(b, err)
				require.True(b, ok)
			}
			_, err = d.DB.Exec("DELETE FROM fxcqrs_outbox WHERE id IN (" + strings.Join(ids, ",") + ")")
			require.NoError(b, err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
	})
}

// forgetAMQPQueue deletes group's queue on topic and topic's exchange.
func forgetAMQPQueue(addr, topic, group string) {
	conn, err := amqp.Dial(addr)
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(topic+"_"+group, false, false, false)
		_ = ch.ExchangeDelete(topic, false, false)
		_ = ch.Close()
	}
}

// bareBatch is one turn of the bare publish-and-delete loop on topic:
// the relay's SELECT of a batch after the row id after (its index,
// (topic, lane, id); read after the last batch, as the relay reads on
// after what it published, so that no SELECT steps over the rows the
// loop deleted), JetStream's asynchronous publish of it, its
// acknowledgements awaited, and one DELETE of its ids. It returns the
// last id it moved, 0 if none.
func bareBatch(b *testing.B, d database, js nc.JetStreamContext, topic string, after int64) int64 {
	sel := d.Dialect.Rebind("SELECT id, message_id, payload, metadata FROM fxcqrs_outbox WHERE topic = ? AND lane = 0 AND id > ? ORDER BY id LIMIT 100")
	rows, err := d.DB.Query(sel, topic, after)
	require.NoError(b, err)
	var ids []string
	var futures []nc.PubAckFuture
	for rows.Next() {
		var (
			id          int64
			msgID, meta string
			payload     []byte
		)
		require.NoError(b, rows.Scan(&id, &msgID, &payload, &meta))
		m := nc.NewMsg(topic)
		m.Data = payload
		m.Header.Set(nc.MsgIdHdr, msgID)
		f, err := js.PublishMsgAsync(m)
		require.NoError(b, err)
		futures = append(futures, f)
		ids = append(ids, fmt.Sprint(id))
		after = id
	}
	require.NoError(b, rows.Err())
	_ = rows.Close()
	if len(ids) == 0 {
		return 0
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	_, err = d.DB.Exec("DELETE FROM fxcqrs_outbox WHERE id IN (" + strings.Join(ids, ",") + ")")
	require.NoError(b, err)
	return after
}

// drainTopics makes n topics with their streams, deleted when b ends.
func drainTopics(b *testing.B, js nc.JetStreamContext, addr string, n int) []string {
	b.Helper()
	topics := make([]string, n)
	for i := range topics {
		topics[i] = fmt.Sprintf("drain_%d", rand.Uint64())
		provisionStream(b, addr, topics[i])
		b.Cleanup(func() { _ = js.DeleteStream(topics[i]) })
	}
	return topics
}

// fillTopics writes n outbox rows spread over topics in turn, as units of
// work of several routes would have.
func fillTopics(b *testing.B, d database, topics []string, n int) {
	b.Helper()
	tx, err := d.DB.Begin()
	require.NoError(b, err)
	stmt, err := tx.Prepare(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, ?)"))
	require.NoError(b, err)
	for i := range n {
		_, err := stmt.Exec(topics[i%len(topics)], fmt.Sprintf("m-%d-%d", rand.Uint64(), i), []byte(`{"id":1}`), `{"name":"OrderPlaced"}`)
		require.NoError(b, err)
	}
	require.NoError(b, stmt.Close())
	require.NoError(b, tx.Commit())
}

// streamsHold is how many messages the streams of topics hold together.
func streamsHold(b *testing.B, js nc.JetStreamContext, topics []string) uint64 {
	var n uint64
	for _, topic := range topics {
		if info, err := js.StreamInfo(topic); err == nil {
			n += info.State.Msgs
		}
	}
	return n
}

// BenchmarkRelayDrainTenants: the relay's fair shares between tenants,
// into NATS JetStream, on each database. b.N rows of one noisy tenant wait
// in one lane; after every 100 of them the relay publishes, nine quiet
// rows commit (one transaction), each of its own tenant (mix=ten-tenants) or
// all of the noisy one (mix=one-tenant, the baseline: the same rows, read in
// id order). "rows/s" is every row over the time until the last is
// published; "quiet-p99-ms" the worst of the quiet tenants' 99th
// percentiles of commit → publish, "noisy-p99-ms" the noisy tenant's
// (its rows committed before the start). Run interleaved rounds with
// -benchtime 20000x -count 1 each, then benchstat -col /mix (see
// docs/outbox.md).
func BenchmarkRelayDrainTenants(b *testing.B) {
	addr := env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
	reachable(b, "FXCQRS_NATS_URL", strings.TrimPrefix(addr, "nats://"))
	for _, dialect := range []fxoutbox.Dialect{fxoutbox.PostgreSQL, fxoutbox.MySQL, fxoutbox.SQLite} {
		b.Run(dialect.String(), func(b *testing.B) {
			d := openDatabase(b, dialect)
			b.Run("mix=one-tenant", func(b *testing.B) { drainTenants(b, d, addr, false) })
			b.Run("mix=ten-tenants", func(b *testing.B) { drainTenants(b, d, addr, true) })
		})
	}
}

func drainTenants(b *testing.B, d database, addr string, tenants bool) {
	topic := fmt.Sprintf("drain_%d", rand.Uint64())
	provisionStream(b, addr, topic)
	conn, err := nc.Connect(addr)
	require.NoError(b, err)
	defer conn.Close()
	js, err := conn.JetStream()
	require.NoError(b, err)
	defer func() { _ = js.DeleteStream(topic) }()
	ins := d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?, ?)")
	meta := func(tenant, key string) string {
		return fmt.Sprintf(`{%q:"OrderPlaced",%q:%q,%q:%q}`, fxbus.MetadataName, fxbus.MetadataKey, key, fxbus.MetadataTenant, tenant)
	}
	tx, err := d.DB.Begin()
	require.NoError(b, err)
	stmt, err := tx.Prepare(ins)
	require.NoError(b, err)
	for i := range b.N {
		key := fmt.Sprintf("order-%d", i%64)
		_, err := stmt.Exec(topic, 0, fmt.Sprintf("noisy/%d", i), []byte(`{"id":1}`), meta("noisy", key), time.Now().UnixNano())
		require.NoError(b, err)
	}
	require.NoError(b, stmt.Close())
	require.NoError(b, tx.Commit())

	ps, err := natsjs.New(natsjs.Config{URL: addr})
	require.NoError(b, err)
	defer ps.Close()
	pub := &timedPublisher{inner: ps, noisyRows: b.N, committed: map[string]time.Time{}, published: map[string]time.Time{}, done: make(chan struct{})}
	bus, err := fxbus.New(fxbus.Config{Publisher: pub}, nil, nil)
	require.NoError(b, err)
	o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
	require.NoError(b, err)
	round := 0
	pub.commit = func() { // under pub.mu, on the relay's goroutine
		tx, err := d.DB.Begin()
		require.NoError(b, err)
		ids := make([]string, 9)
		for j := range ids {
			tenant := fmt.Sprintf("quiet-%d", j)
			ids[j] = fmt.Sprintf("%s/%d", tenant, round)
			if !tenants {
				tenant = "noisy"
			}
			_, err := tx.Exec(ins, topic, 0, ids[j], []byte(`{"id":1}`), meta(tenant, fmt.Sprintf("quiet-%d", j)), time.Now().UnixNano())
			require.NoError(b, err)
		}
		require.NoError(b, tx.Commit())
		round++
		at := time.Now()
		for _, id := range ids {
			pub.committed[id] = at
		}
		fxoutbox.Wake(o, topic)
	}
	b.ResetTimer()
	start := time.Now()
	require.NoError(b, o.Start(context.Background()))
	<-pub.done
	elapsed := time.Since(start)
	b.StopTimer()
	require.NoError(b, o.Stop(context.Background()))

	pub.mu.Lock()
	defer pub.mu.Unlock()
	waits := map[string][]time.Duration{}
	for id, at := range pub.published {
		tenant, _, _ := strings.Cut(id, "/")
		from, ok := pub.committed[id]
		if !ok {
			from = start // the backlog: waiting when the relay started
		}
		waits[tenant] = append(waits[tenant], at.Sub(from))
	}
	quiet := time.Duration(0)
	for tenant, w := range waits {
		slices.Sort(w)
		p99 := w[len(w)*99/100]
		if tenant == "noisy" {
			b.ReportMetric(float64(p99.Microseconds())/1000, "noisy-p99-ms")
		} else {
			quiet = max(quiet, p99)
		}
	}
	b.ReportMetric(float64(quiet.Microseconds())/1000, "quiet-p99-ms")
	b.ReportMetric(float64(len(pub.published))/elapsed.Seconds(), "rows/s")
}

// timedPublisher publishes through inner and keeps when each row went,
// commits the quiet rows (commit) after every 100 noisy rows it
// published, until those have gone, and closes done when every row has.
type timedPublisher struct {
	inner     *natsjs.PubSub
	mu        sync.Mutex
	commit    func()
	committed map[string]time.Time
	published map[string]time.Time
	noisy     int
	noisyRows int
	done      chan struct{}
	closed    bool
}

func (p *timedPublisher) Publish(topic string, msgs ...*message.Message) error {
	_, err := p.PublishBatch(topic, msgs)
	return err
}

func (p *timedPublisher) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	n, err := p.inner.PublishBatch(topic, msgs)
	at := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs[:n] {
		if _, again := p.published[m.UUID]; again {
			continue
		}
		p.published[m.UUID] = at
		if strings.HasPrefix(m.UUID, "noisy/") {
			p.noisy++
			if p.noisy%100 == 0 && p.noisy < p.noisyRows {
				p.commit()
			}
		}
	}
	if !p.closed && p.noisy == p.noisyRows && len(p.published) == p.noisyRows+len(p.committed) {
		p.closed = true
		close(p.done)
	}
	return n, err
}

func (p *timedPublisher) Close() error { return nil }
