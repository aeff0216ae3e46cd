package kafkatest

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The two ratios, on PostgreSQL and kfake (whose absolute figures
// are not Kafka's; the ratios within one run are what counts):
//
//	go test -run '^$' -bench 'RelayDrain|Consume' -benchtime 5000x -benchmem .
//
// RelayDrain/relay's rows/s ÷ RelayDrain/limit's, and Consume/bus's
// msgs/s ÷ Consume/limit's.

// BenchmarkRelayDrain: how fast the relay empties an outbox of b.N keyed
// rows of one topic into Kafka (kafkabus's PublishBatch), against a bare
// loop in the same run: the same SELECT of 100 rows, franz-go's
// ProduceSync of them (idempotent, acks=all, the key as record key), and
// one DELETE of their ids.
func BenchmarkRelayDrain(b *testing.B) {
	d := outboxtest.Open(b, fxoutbox.PostgreSQL)
	c := newCluster(b)
	fillOutbox := func(b *testing.B, topic string) {
		tx, err := d.DB.Begin()
		require.NoError(b, err)
		stmt, err := tx.Prepare("INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata, created_ns) VALUES ($1, 0, $2, $3, $4, 0)")
		require.NoError(b, err)
		for i := range b.N {
			key := fmt.Sprintf("c%d", i%64)
			_, err := stmt.Exec(topic, fmt.Sprintf("m-%s-%d", topic, i), fmt.Appendf(nil, `{"id":%d,"customer":%q}`, i, key), `{"name":"Placed","key":"`+key+`"}`)
			require.NoError(b, err)
		}
		require.NoError(b, stmt.Close())
		require.NoError(b, tx.Commit())
	}
	provision := func(b *testing.B) (string, *kafkabus.PubSub) {
		ps := newPubSub(b, c, "")
		topic := name(b, "drain")
		require.NoError(b, ps.Provision(context.Background(), topic))
		return topic, ps
	}
	outboxEmpty := func() bool { return outboxtest.Count(b, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 0 }

	b.Run("relay", func(b *testing.B) {
		topic, ps := provision(b)
		fillOutbox(b, topic)
		bus, err := fxbus.New(fxbus.Config{Publisher: ps}, nil, nil)
		require.NoError(b, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL}, nil)
		require.NoError(b, err)
		b.ResetTimer()
		start := time.Now()
		require.NoError(b, o.Start(context.Background()))
		for !outboxEmpty() {
			time.Sleep(time.Millisecond) // a benchmark's poll, not synchronisation
		}
		elapsed := time.Since(start)
		b.StopTimer()
		require.NoError(b, o.Stop(context.Background()))
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
	})

	b.Run("limit", func(b *testing.B) {
		topic, _ := provision(b)
		fillOutbox(b, topic)
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()))
		require.NoError(b, err)
		defer cl.Close()
		sel := "SELECT id, message_id, payload, metadata FROM fxcqrs_outbox WHERE topic = $1 AND lane = 0 ORDER BY id LIMIT 100"
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		for {
			rows, err := d.DB.Query(sel, topic)
			require.NoError(b, err)
			var (
				ids  []string
				recs []*kgo.Record
			)
			for rows.Next() {
				var (
					id          int64
					msgID, meta string
					payload     []byte
				)
				require.NoError(b, rows.Scan(&id, &msgID, &payload, &meta))
				key := meta[strings.LastIndex(meta, `"key":"`)+7 : len(meta)-2]
				recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: payload, Headers: []kgo.RecordHeader{
					{Key: "_watermill_message_uuid", Value: []byte(msgID)}, {Key: "name", Value: []byte("Placed")}, {Key: "key", Value: []byte(key)},
				}})
				ids = append(ids, fmt.Sprint(id))
			}
			require.NoError(b, rows.Err())
			_ = rows.Close()
			if len(ids) == 0 {
				break
			}
			require.NoError(b, cl.ProduceSync(ctx, recs...).FirstErr())
			_, err = d.DB.Exec("DELETE FROM fxcqrs_outbox WHERE id IN (" + strings.Join(ids, ",") + ")")
			require.NoError(b, err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
	})
}

// benchCommitInterval is both consumers' commit cadence.
const benchCommitInterval = time.Second

// BenchmarkConsume: how fast a service consumes b.N keyed messages (64
// keys, 8 partitions) through the bus with the inbox (a subscription with
// InOrder and InFlight 16: the inbox's INSERT and the handler's in one
// transaction per message), against a bare franz-go group consumer in the
// same run with the same parallelism (16 workers, a key always on the
// same one), the same two INSERTs in one transaction, and the same
// offset-commit cadence: both commit the offsets they marked handled
// every benchCommitInterval (franz-go's autocommit of marks; the bus
// marks each partition's handled prefix as it grows, the bare loop each
// polled batch once all of it was handled).
func BenchmarkConsume(b *testing.B) {
	d := outboxtest.Open(b, fxoutbox.PostgreSQL)
	// Both sides run 16 transactions at once: with database/sql's 2
	// idle connections, most would close after their transaction and
	// the next open a new one (a PostgreSQL backend each), as no service
	// configures its pool.
	d.DB.SetMaxIdleConns(32)
	for _, ddl := range []string{
		"CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, order_id BIGINT NOT NULL, customer TEXT NOT NULL)",
		"CREATE TABLE bare_inbox (handler TEXT NOT NULL, message_id TEXT NOT NULL, PRIMARY KEY (handler, message_id))",
	} {
		_, err := d.DB.Exec(ddl)
		require.NoError(b, err)
	}
	c := newCluster(b)
	backlog := func(b *testing.B) string {
		ps := newPubSub(b, c, "")
		topic := name(b, "consume")
		require.NoError(b, ps.Provision(context.Background(), topic))
		raw, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
		require.NoError(b, err)
		defer raw.Close()
		recs := make([]*kgo.Record, b.N)
		for i := range recs {
			recs[i] = placedRecord(topic, int64(i)+1)
			recs[i].Key = fmt.Appendf(nil, "c%d", i%64)
			recs[i].Headers[0].Value = fmt.Appendf(nil, "%s-%d", topic, i) // an id of this run's: the inbox keeps the last run's
			recs[i].Headers[1].Value = recs[i].Key
		}
		require.NoError(b, raw.ProduceSync(context.Background(), recs...).FirstErr())
		_, err = d.DB.Exec("TRUNCATE effects")
		require.NoError(b, err)
		return topic
	}

	b.Run("bus", func(b *testing.B) {
		topic := backlog(b)
		ps := newPubSub(b, c, name(b, "g"), func(cfg *kafkabus.Config) { cfg.CommitInterval = benchCommitInterval })
		bus, err := fxbus.New(fxbus.Config{Publisher: ps, Subscriber: ps}, nil,
			[]fxbus.Subscription{fxbus.NewSubscription[Placed](topic, fxbus.InOrder(), fxbus.InFlight(16))})
		require.NoError(b, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Inbox: true}, nil)
		require.NoError(b, err)
		// The end is the b.N'th commit, as the bare loop counts its own
		// (polling a COUNT would load the database it measures).
		var committed atomic.Int64
		allCommitted := make(chan struct{})
		m, err := fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 16}},
			fxcqrs.WithEventHandlers(placedFunc(func(ctx context.Context, e Placed) error {
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO effects (order_id, customer) VALUES ($1, $2)", e.ID, e.Customer); err != nil {
					return err
				}
				return fxoutbox.AfterCommit(ctx, func(context.Context) {
					if committed.Add(1) == int64(b.N) {
						close(allCommitted)
					}
				})
			})),
			fxcqrs.WithMiddleware(o.UnitOfWork()))
		require.NoError(b, err)
		b.ResetTimer()
		start := time.Now()
		require.NoError(b, bus.Start(context.Background(), m))
		select {
		case <-allCommitted:
		case <-time.After(10 * time.Minute):
			b.Fatalf("%d of %d handled in 10 minutes", committed.Load(), b.N)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		require.NoError(b, bus.Stop(context.Background()))
		require.NoError(b, m.Stop(context.Background()))
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	})

	b.Run("limit", func(b *testing.B) {
		topic := backlog(b)
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup(name(b, "g")), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.Balancers(kgo.CooperativeStickyBalancer()),
			kgo.AutoCommitMarks(), kgo.AutoCommitInterval(benchCommitInterval))
		require.NoError(b, err)
		defer cl.Close()
		ctx := context.Background()
		handle := func(r *kgo.Record) {
			var e Placed
			require.NoError(b, fxbus.JSON{}.Unmarshal(r.Value, &e))
			tx, err := d.DB.BeginTx(ctx, nil)
			require.NoError(b, err)
			_, err = tx.Exec("INSERT INTO bare_inbox (handler, message_id) VALUES ('billing', $1) ON CONFLICT DO NOTHING", string(r.Headers[0].Value))
			require.NoError(b, err)
			_, err = tx.Exec("INSERT INTO effects (order_id, customer) VALUES ($1, $2)", e.ID, e.Customer)
			require.NoError(b, err)
			require.NoError(b, tx.Commit())
		}
		b.ResetTimer()
		start := time.Now()
		done := 0
		for done < b.N {
			fs := cl.PollRecords(ctx, 64)
			require.NoError(b, fs.Err0())
			var (
				wg      sync.WaitGroup
				workers [16][]*kgo.Record
			)
			fs.EachRecord(func(r *kgo.Record) {
				h := fnv.New32a()
				_, _ = h.Write(r.Key)
				workers[h.Sum32()%16] = append(workers[h.Sum32()%16], r)
			})
			for _, rs := range workers {
				wg.Go(func() {
					for _, r := range rs {
						handle(r)
					}
				})
			}
			wg.Wait()
			done += fs.NumRecords()
			cl.MarkCommitRecords(fs.Records()...)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	})
}
