package fxoutbox_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
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

// Under the outbox module, what a subscription dead-letters is recorded
// in SQL too, listed with the outbox's letters (a negative id), and its
// replay publishes it to its topic again, through the outbox, with its
// id: the subscription handles it once it can.
func TestInboundDeadLetters(t *testing.T) {
	t.Parallel()
	d := openDatabase(t, fxoutbox.SQLite)
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16, Persistent: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	var (
		o       *fxoutbox.Outbox
		fixed   atomic.Bool
		handled = make(chan string, 4)
	)
	app := fxtest.New(t,
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(d.DB, fxoutbox.Config{Dialect: fxoutbox.SQLite, Inbox: true, Relay: fxoutbox.RelayConfig{PollInterval: 10 * time.Millisecond}}),
		fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
		fxbus.Subscribe[OrderPlaced]("inbound", fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 1, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond})),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(ctx context.Context, e OrderPlaced) error {
				if !fixed.Load() {
					return errors.New("the ledger is down")
				}
				handled <- fxbus.MessageID(ctx)
				return nil
			}
		}),
		fx.Populate(&o),
	)
	app.RequireStart()
	defer app.RequireStop()
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"ID":5}`))
	msg.Metadata.Set(fxbus.MetadataName, "OrderPlaced")
	require.NoError(t, gc.Publish("inbound", msg))
	var letters []fxoutbox.DeadLetter
	waitFor(t, func() bool {
		var err error
		letters, err = o.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: "inbound"})
		require.NoError(t, err)
		return len(letters) == 1
	})
	l := letters[0]
	assert.True(t, l.Inbound)
	assert.Negative(t, l.ID)
	assert.Equal(t, msg.UUID, l.MessageID)
	assert.Contains(t, l.Error, "the ledger is down")
	counts, err := o.Admin().DeadLetters(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []fxoutbox.TopicDeadLetters{{Topic: "inbound", Rows: 1, Last: l.FailedAt}}, counts)

	fixed.Store(true)
	n, err := o.Admin().Replay(context.Background(), []int64{l.ID}, "ops", "the ledger is back")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	select {
	case id := <-handled:
		assert.Equal(t, msg.UUID, id, "handled with its own id")
	case <-time.After(time.Minute):
		t.Fatal("the replayed message was never handled")
	}
	left, err := o.Admin().ListDead(context.Background(), fxoutbox.DeadLetterFilter{})
	require.NoError(t, err)
	assert.Empty(t, left)
}
