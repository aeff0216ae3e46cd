package durable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/require"
)

// OrderPlaced is the event the consumers handle.
type OrderPlaced struct{ ID int }

type onOrderPlaced func(context.Context, OrderPlaced) error

func (f onOrderPlaced) Handle(ctx context.Context, e OrderPlaced) error { return f(ctx, e) }

// BenchmarkConsume: how fast a service consumes b.N messages waiting in a
// JetStream stream, each handled once through an inbox record and one
// effect row written in the same PostgreSQL transaction. "fxcqrs" is an
// fxbus subscription with the outbox's inbox (Config.Inbox) and its relay
// running, as fxoutbox.Module runs them; "router" is a Watermill router
// over the same subscriber with Retry and PoisonQueue, as a Watermill
// service is usually built, whose handler decodes the JSON and writes the
// same two rows itself. Run with -benchtime 20000x; the figure is msgs/s.
func BenchmarkConsume(b *testing.B) {
	addr := natsURL(b)
	d := outboxtest.Open(b, fxoutbox.PostgreSQL)
	js := jetStream(b, addr)
	_, err := d.DB.Exec("CREATE TABLE effects (order_id BIGINT NOT NULL)")
	require.NoError(b, err)
	insertEffect := "INSERT INTO effects (order_id) VALUES ($1)"

	prepare := func(b *testing.B) (topic string, ps *natsjs.PubSub) {
		b.Helper()
		topic = fmt.Sprintf("consume_%d", rand.Uint64())
		b.Cleanup(func() { _ = js.DeleteStream(topic) })
		ps, err := natsjs.New(natsjs.Config{URL: addr, Group: "svc_" + topic})
		require.NoError(b, err)
		b.Cleanup(func() { _ = ps.Close() })
		require.NoError(b, ps.Provision(context.Background(), topic))
		msgs := make([]*message.Message, 0, 1000)
		for i := range b.N {
			msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"ID":%d}`, i))
			msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
			msgs = append(msgs, msg)
			if len(msgs) == cap(msgs) || i == b.N-1 {
				require.NoError(b, ps.Publish(topic, msgs...))
				msgs = msgs[:0]
			}
		}
		waitStreams(b, js, []string{topic}, b.N)
		return topic, ps
	}

	b.Run("fxcqrs", func(b *testing.B) {
		topic, ps := prepare(b)
		var handled atomic.Int64
		done := make(chan struct{})
		bus, err := fxbus.New(fxbus.Config{Publisher: ps, Subscriber: ps}, nil,
			[]fxbus.Subscription{fxbus.NewSubscription[OrderPlaced](topic)})
		require.NoError(b, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Inbox: true}, nil)
		require.NoError(b, err)
		m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()),
			fxcqrs.WithEventHandlers(onOrderPlaced(func(ctx context.Context, e OrderPlaced) error {
				if _, err := fxoutbox.Tx(ctx).ExecContext(ctx, insertEffect, e.ID); err != nil {
					return err
				}
				if handled.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			})))
		require.NoError(b, err)
		require.NoError(b, o.Start(context.Background()))
		b.ResetTimer()
		start := time.Now()
		require.NoError(b, bus.Start(context.Background(), m))
		<-done
		elapsed := time.Since(start)
		b.StopTimer()
		require.NoError(b, bus.Stop(context.Background()))
		require.NoError(b, m.Stop(context.Background()))
		require.NoError(b, o.Stop(context.Background()))
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	})

	b.Run("router", func(b *testing.B) {
		topic, ps := prepare(b)
		var handled atomic.Int64
		done := make(chan struct{})
		log := watermill.NopLogger{}
		router, err := message.NewRouter(message.RouterConfig{}, log)
		require.NoError(b, err)
		poison, err := middleware.PoisonQueue(ps, topic+"_poison")
		require.NoError(b, err)
		router.AddMiddleware(poison, middleware.Retry{MaxRetries: 3, InitialInterval: 100 * time.Millisecond, Logger: log}.Middleware)
		inboxInsert := "INSERT INTO fxcqrs_inbox (handler, message_id, handled_ns) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
		router.AddConsumerHandler("billing", topic, ps, func(msg *message.Message) error {
			var e OrderPlaced
			if err := json.Unmarshal(msg.Payload, &e); err != nil {
				return err
			}
			tx, err := d.DB.BeginTx(msg.Context(), nil)
			if err != nil {
				return err
			}
			res, err := tx.ExecContext(msg.Context(), inboxInsert, "billing", msg.UUID, time.Now().UnixNano())
			if err != nil {
				return errors.Join(err, tx.Rollback())
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return errors.Join(err, tx.Rollback()) // handled before: a redelivery
			}
			if _, err := tx.ExecContext(msg.Context(), insertEffect, e.ID); err != nil {
				return errors.Join(err, tx.Rollback())
			}
			if handled.Add(1) == int64(b.N) {
				close(done)
			}
			return tx.Commit()
		})
		b.ResetTimer()
		start := time.Now()
		go func() { _ = router.Run(context.Background()) }()
		<-done
		elapsed := time.Since(start)
		b.StopTimer()
		require.NoError(b, router.Close())
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	})
}
