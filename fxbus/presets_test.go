package fxbus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

type (
	PresetPing struct{ N int }
	SendPing   struct{ N int }
)

// Each preset's module is the broker in one line: an application with it
// sends a routed event to its own subscription and handles it, and the
// preset is closed when the application stops.
func TestPresetModules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		module func(t *testing.T, topic string) fx.Option
	}{
		{"natsjs", func(t *testing.T, tp string) fx.Option {
			b := natsBroker(t)
			t.Cleanup(func() { b.forget(t, tp) })
			return natsjs.Module(natsjs.Config{URL: requireService(t, "FXCQRS_NATS_URL", "nats://127.0.0.1:4222"), Group: "p"})
		}},
		{"amqpbus", func(t *testing.T, tp string) fx.Option {
			b := rabbitBroker(t)
			t.Cleanup(func() { b.forget(t, tp) })
			return amqpbus.Module(amqpbus.Config{URL: requireService(t, "FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), Group: "p"})
		}},
		{"redisbus", func(t *testing.T, tp string) fx.Option {
			addr := requireService(t, "FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
			t.Cleanup(func() {
				c := redis.NewClient(&redis.Options{Addr: addr})
				defer c.Close()
				_ = c.Del(context.Background(), tp).Err()
			})
			return redisbus.Module(redisbus.Config{Addr: addr, Group: "p"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tp := topic(t, "preset")
			var inbound atomic.Int32
			var (
				m   *fxcqrs.Mediator
				pub message.Publisher
			)
			app := fx.New(fx.NopLogger,
				fxcqrs.Module, fxbus.Module,
				tc.module(t, tp),
				fxbus.Route[PresetPing](tp),
				fxbus.Subscribe[PresetPing](tp),
				fxcqrs.AsCommandHandler(func() commandFunc[SendPing] {
					return func(ctx context.Context, c SendPing) error {
						fxcqrs.Emit(ctx, PresetPing(c))
						return nil
					}
				}),
				fxcqrs.AsEventHandler(func() eventFunc[PresetPing] {
					return func(ctx context.Context, _ PresetPing) error {
						if fxbus.MessageID(ctx) != "" {
							inbound.Add(1)
						}
						return nil
					}
				}),
				fx.Populate(&m, &pub),
			)
			require.NoError(t, app.Err())
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			require.NoError(t, app.Start(ctx))
			require.NoError(t, fxcqrs.Exec(ctx, m, SendPing{N: 1}))
			require.Eventually(t, func() bool { return inbound.Load() == 1 }, time.Minute, 5*time.Millisecond, "through the broker and back")
			require.NoError(t, app.Stop(ctx))
			assert.Error(t, pub.Publish(tp, message.NewMessage("after-stop", []byte(`{}`))), "closed with the application")
		})
	}
}

// A preset that cannot reach its broker fails fx.New with New's error.
func TestPresetModuleUnreachable(t *testing.T) {
	t.Parallel()
	app := fx.New(fx.NopLogger, fxcqrs.Module, fxbus.Module,
		natsjs.Module(natsjs.Config{URL: "nats://127.0.0.1:1", Group: "p"}),
		fx.Invoke(func(message.Publisher) {}))
	require.Error(t, app.Err())
	assert.ErrorContains(t, app.Err(), "natsjs: NATS at nats://127.0.0.1:1 cannot be reached")
}
