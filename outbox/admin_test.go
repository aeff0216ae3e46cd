package fxoutbox_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	fxbus "github.com/fxcqrs/fxcqrs/bus"
	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mendedPublisher refuses every message as too large until it is mended,
// then keeps them.
type mendedPublisher struct {
	mended atomic.Bool
	mu     sync.Mutex
	kept   []*message.Message
}

func (p *mendedPublisher) Publish(_ string, msgs ...*message.Message) error {
	if !p.mended.Load() {
		return errTooLarge
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kept = append(p.kept, msgs...)
	return nil
}

func (p *mendedPublisher) Close() error { return nil }

func (p *mendedPublisher) got() []*message.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*message.Message(nil), p.kept...)
}

type (
	Refused  struct{ N int }
	Rejected struct{ N int }
)

// The repair tools' outbox side: dead letters listed by filter, shown,
// replayed once (with their message id, in one transaction) and
// discarded with the reason kept; each action recorded with who and why;
// the leases listed.
func TestAdminDeadLetters(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		pub := &mendedPublisher{}
		bus, err := fxbus.New(fxbus.Config{Publisher: pub}, []fxbus.Routing{
			fxbus.NewRoute[Refused]("refused"), fxbus.NewRoute[Rejected]("rejected"),
		}, nil)
		require.NoError(t, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
			PollInterval: 10 * time.Millisecond, Undeliverable: func(err error) bool { return errors.Is(err, errTooLarge) },
		}}, nil)
		require.NoError(t, err)
		m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithMiddleware(o.UnitOfWork()), fxcqrs.WithCommandHandlers(
			commandFunc[PlaceOrder](func(ctx context.Context, c PlaceOrder) error {
				fxcqrs.Emit(ctx, Refused{N: c.ID})
				fxcqrs.Emit(ctx, Rejected{N: c.ID})
				return nil
			})))
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, m.Stop(ctx)) })
		require.NoError(t, o.Start(ctx))
		t.Cleanup(func() { require.NoError(t, o.Stop(ctx)) })
		require.NoError(t, fxcqrs.Exec(ctx, m, PlaceOrder{ID: 1}))
		waitFor(t, func() bool { return o.Stats().DeadLettered == 2 })

		admin := o.Admin()
		all, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{})
		require.NoError(t, err)
		require.Len(t, all, 2)
		refused, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Name: "Refused", ErrorContains: "too large"})
		require.NoError(t, err)
		require.Len(t, refused, 1)
		assert.Equal(t, "refused", refused[0].Topic)
		assert.JSONEq(t, `{"N":1}`, string(refused[0].Payload))
		none, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Until: time.Now().Add(-time.Hour)})
		require.NoError(t, err)
		assert.Empty(t, none, "failed after the range")
		shown, err := admin.Dead(ctx, refused[0].ID)
		require.NoError(t, err)
		assert.Equal(t, refused[0].MessageID, shown.MessageID)

		_, err = admin.Replay(ctx, []int64{refused[0].ID}, "", "fixed")
		require.ErrorContains(t, err, "say who")
		pub.mended.Store(true)
		n, err := admin.Replay(ctx, []int64{refused[0].ID, refused[0].ID}, "ops@example.com", "the broker's limit was raised")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "once, though asked twice")
		n, err = admin.Replay(ctx, []int64{refused[0].ID}, "ops@example.com", "again")
		require.NoError(t, err)
		assert.Zero(t, n, "already replayed")
		waitFor(t, func() bool { return len(pub.got()) == 1 })
		assert.Equal(t, refused[0].MessageID, pub.got()[0].UUID, "replayed with its id, for the inbox")

		rejected, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Topic: "rejected"})
		require.NoError(t, err)
		require.Len(t, rejected, 1)
		_, err = admin.Discard(ctx, []int64{rejected[0].ID}, "ops@example.com", "")
		require.ErrorContains(t, err, "say why")
		n, err = admin.Discard(ctx, []int64{rejected[0].ID}, "ops@example.com", "a test order, never to be sent")
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		left, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{})
		require.NoError(t, err)
		assert.Empty(t, left)
		discarded, err := admin.ListDead(ctx, fxoutbox.DeadLetterFilter{Discarded: true})
		require.NoError(t, err)
		require.Len(t, discarded, 1)
		assert.Equal(t, "a test order, never to be sent", discarded[0].DiscardReason)
		counts, err := admin.DeadLetters(ctx)
		require.NoError(t, err)
		assert.Empty(t, counts, "a discarded letter is not counted")

		repairs, err := admin.Repairs(ctx, 10)
		require.NoError(t, err)
		require.Len(t, repairs, 2)
		assert.Equal(t, "discard", repairs[0].Action)
		assert.Equal(t, "replay", repairs[1].Action)
		assert.Equal(t, "the broker's limit was raised", repairs[1].Why)
		leases, err := admin.Leases(ctx)
		require.NoError(t, err)
		assert.NotEmpty(t, leases, "the relay's")
	})
}
