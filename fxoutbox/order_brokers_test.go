package fxoutbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// The brokers the order tests run on, and the processes' pieces they
// share: a topic provisioned for the consumer group, a producer's
// publisher, and the consumer.

// orderBrokers are the brokers that keep a key's order through restarts
// by an adapter of fxcqrs's own.
var orderBrokers = []string{"nats", "amqp", "redis"}

// broker is an adapter as a process uses it.
type broker interface {
	message.Publisher
	message.Subscriber
}

// provisionOrder returns broker's address (or skips t) and a topic of
// t's own, provisioned for the orders group before anything is published
// (RabbitMQ drops what reaches an exchange no queue is bound to), and
// removed when t ends.
func provisionOrder(t *testing.T, b string) (addr, topic string) {
	t.Helper()
	topic = fmt.Sprintf("order_%s_%d", b, rand.Uint32())
	ctx := context.Background()
	switch b {
	case "nats":
		addr = env("FXCQRS_NATS_URL", "nats://127.0.0.1:4222")
		reachable(t, "FXCQRS_NATS_URL", hostOf(t, addr))
		ps, err := natsjs.New(natsjs.Config{URL: addr})
		require.NoError(t, err)
		defer ps.Close()
		require.NoError(t, ps.Provision(ctx, topic))
		dropStreamAtCleanup(t, addr, topic)
	case "amqp":
		addr = env("FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
		reachable(t, "FXCQRS_AMQP_URL", hostOf(t, addr))
		ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: orderGroup})
		require.NoError(t, err)
		defer ps.Close()
		require.NoError(t, ps.ProvisionConsumer(ctx, topic))
		t.Cleanup(func() {
			conn, err := amqp.Dial(addr)
			if err != nil {
				return
			}
			defer conn.Close()
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(topic+"_"+orderGroup, false, false, false)
				_ = ch.ExchangeDelete(topic, false, false)
				_ = ch.Close()
			}
		})
	case "redis":
		addr = env("FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
		reachable(t, "FXCQRS_REDIS_ADDR", addr)
		ps, err := redisbus.New(redisbus.Config{Addr: addr, Group: orderGroup})
		require.NoError(t, err)
		defer ps.Close()
		require.NoError(t, ps.Provision(ctx, topic))
		t.Cleanup(func() {
			c := redis.NewClient(&redis.Options{Addr: addr})
			_ = c.Del(context.Background(), topic).Err()
			_ = c.Close()
		})
	default:
		t.Fatalf("no broker %q", b)
	}
	return addr, topic
}

// orderDB is a child process's pool on FXCQRS_ORDER_DSN, closed when t
// ends: of 8 connections, as the PostgreSQL server is shared.
func orderDB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", os.Getenv("FXCQRS_ORDER_DSN"))
	require.NoError(t, err)
	db.SetMaxOpenConns(8)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// orderPublisher is a producer's publisher on b at addr.
func orderPublisher(b, addr string) (message.Publisher, error) {
	return orderLanedPublisher(b, addr, nil)
}

// orderLanedPublisher is a producer's publisher on b at addr, with the
// broker's lanes of some topics (TopicLanes).
func orderLanedPublisher(b, addr string, topicLanes map[string]int) (message.Publisher, error) {
	switch b {
	case "nats":
		return natsjs.New(natsjs.Config{URL: addr, TopicLanes: topicLanes})
	case "amqp":
		return amqpbus.New(amqpbus.Config{URL: addr, TopicLanes: topicLanes})
	}
	return redisbus.New(redisbus.Config{Addr: addr, TopicLanes: topicLanes})
}

// orderSubscriber is the consumer's adapter on b at addr, of the orders
// group (on Redis under its default consumer name, the same across the
// process's restarts on one host).
func orderSubscriber(b, addr string) (broker, error) {
	switch b {
	case "nats":
		return natsjs.New(natsjs.Config{URL: addr, Group: orderGroup, AckWait: 5 * time.Second})
	case "amqp":
		return amqpbus.New(amqpbus.Config{URL: addr, Group: orderGroup})
	}
	return redisbus.New(redisbus.Config{Addr: addr, Group: orderGroup})
}

// orderProcess is the consumer of a process of the order tests, made and
// not yet consuming: the bus on FXCQRS_ORDER_BROKER, InOrder and
// InFlight(32), the inbox, each handling recorded in its transaction.
type orderProcess struct {
	t  testing.TB
	ps broker
	b  *fxbus.Bus
	m  *fxcqrs.Mediator
}

func orderConsumer(t testing.TB, db *sql.DB) *orderProcess {
	t.Helper()
	ps, err := orderSubscriber(os.Getenv("FXCQRS_ORDER_BROKER"), os.Getenv("FXCQRS_ORDER_ADDR"))
	require.NoError(t, err)
	b, err := fxbus.New(fxbus.Config{Publisher: ps, Subscriber: ps}, nil, []fxbus.Subscription{
		fxbus.NewSubscription[Keyed](os.Getenv("FXCQRS_ORDER_TOPIC"), fxbus.InOrder(), fxbus.InFlight(32)),
	})
	require.NoError(t, err)
	o, err := fxoutbox.New(db, b, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Inbox: true}, nil)
	require.NoError(t, err)
	m, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithEventHandlers(eventFunc[Keyed](func(ctx context.Context, e Keyed) error {
			_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO handled (k, seq) VALUES ($1, $2)", e.Key, e.Seq)
			return err
		})),
		fxcqrs.WithMiddleware(o.UnitOfWork()))
	require.NoError(t, err)
	return &orderProcess{t: t, ps: ps, b: b, m: m}
}

// start consumes.
func (p *orderProcess) start() { require.NoError(p.t, p.b.Start(context.Background(), p.m)) }

// stop stops consuming cleanly: the bus, the mediator, the adapter.
func (p *orderProcess) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(p.t, p.b.Stop(ctx))
	require.NoError(p.t, p.m.Stop(ctx))
	require.NoError(p.t, p.ps.Close())
}

func hostOf(t testing.TB, addr string) string {
	t.Helper()
	u, err := url.Parse(addr)
	require.NoError(t, err)
	return u.Host
}

// sentOrder is each key's sequence numbers in the order the topic's
// stream holds them (first ones only), on the brokers that keep a stream
// to read again (NATS, Redis); nil on RabbitMQ.
func sentOrder(t testing.TB, b, addr, topic string) map[string][]int {
	t.Helper()
	switch b {
	case "nats":
		return streamOrder(t, addr, topic)
	case "redis":
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		entries, err := c.XRange(context.Background(), topic, "-", "+").Result()
		require.NoError(t, err)
		out := map[string][]int{}
		seen := map[Keyed]bool{}
		for _, e := range entries {
			var k Keyed
			payload, _ := e.Values["payload"].(string)
			require.NoError(t, json.Unmarshal([]byte(payload), &k))
			if !seen[k] {
				seen[k] = true
				out[k.Key] = append(out[k.Key], k.Seq)
			}
		}
		return out
	}
	return nil
}
