package fxbus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// laneParking is a Parking shared by replicas: the keys parked, and what
// was asked of it.
type laneParking struct {
	mu     sync.Mutex
	parked map[string]bool
	reads  int
}

var _ fxbus.Parking = (*laneParking)(nil)

func (p *laneParking) RecordDeadLetter(context.Context, string, *message.Message, error) error {
	return nil
}

func (p *laneParking) RecordParked(_ context.Context, _, key string, _ *message.Message, _ error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked[key] = true
	return nil
}

func (p *laneParking) ParkedKeys(context.Context, string) ([]fxbus.ParkedKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reads++
	var keys []fxbus.ParkedKey
	for k := range p.parked {
		keys = append(keys, fxbus.ParkedKey{Key: k}) // the test's messages have no tenant
	}
	return keys, nil
}

func (p *laneParking) Admit(_ context.Context, _, key string, _ *message.Message) (fxbus.Admission, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked[key] {
		return fxbus.AdmitParked, nil
	}
	return fxbus.AdmitFree, nil
}

func (p *laneParking) Arrived(context.Context, string, string, string) error { return nil }

func (p *laneParking) Repark(context.Context, string, string, string, error) error { return nil }

// laneSubscriber says of each message that it came from lane 0 under the
// epoch the test sets: what natsjs and redisbus with lanes do.
type laneSubscriber struct {
	*fxbus.Embedded
	epoch *atomic.Uint64
}

func (l laneSubscriber) SubscribeFlow(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	in, err := l.Embedded.SubscribeFlow(ctx, topic, flow)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for m := range in {
			m.SetContext(fxbus.WithLaneLease(m.Context(), fxbus.LaneLease{Lane: 0, Epoch: l.epoch.Load(), Held: func() bool { return true }}))
			out <- m
		}
	}()
	return out, nil
}

type laneEvent struct{ Key string }

type laneHandler struct {
	mu   sync.Mutex
	seen []string
}

func (h *laneHandler) Handle(_ context.Context, e laneEvent) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, e.Key)
	return nil
}

func (h *laneHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

// A key that another replica parked (recorded in the shared Parking after
// this one started) is parked here too once its lane changes hands (a new
// lease epoch): the parked keys are read again before the first message
// of the new epoch is handled.
func TestParkedKeysAreReadAgainWhenALaneChangesHands(t *testing.T) {
	t.Parallel()
	broker := fxbus.NewEmbedded(fxbus.EmbeddedConfig{})
	t.Cleanup(func() { require.NoError(t, broker.Close()) })
	parking := &laneParking{parked: map[string]bool{}}
	epoch := new(atomic.Uint64)
	epoch.Store(1)
	tp := fmt.Sprintf("lanes_%d", rand.Uint64())
	b, err := fxbus.New(fxbus.Config{Publisher: broker, Subscriber: laneSubscriber{broker, epoch}, DeadLetters: parking},
		nil, []fxbus.Subscription{fxbus.NewSubscription[laneEvent](tp, fxbus.InOrder())})
	require.NoError(t, err)
	h := &laneHandler{}
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(h))
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background(), m))
	t.Cleanup(func() {
		require.NoError(t, b.Stop(context.Background()))
		require.NoError(t, m.Stop(context.Background()))
	})
	publish := func(key string) {
		msg := message.NewMessage(fmt.Sprintf("%s-%d", key, rand.Uint64()), fmt.Appendf(nil, `{"Key":%q}`, key))
		msg.Metadata.Set(fxbus.MetadataName, b.NameOf(reflect.TypeFor[laneEvent]()))
		msg.Metadata.Set(fxbus.MetadataKey, key)
		require.NoError(t, broker.Publish(tp, msg))
	}
	wait := func(cond func() bool) {
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			require.False(t, time.Now().After(deadline), "not within a minute")
			time.Sleep(5 * time.Millisecond) // polling the handler's count
		}
	}

	publish("a")
	wait(func() bool { return h.count() == 1 })
	parking.mu.Lock()
	parking.parked["a"] = true // another replica, which had the lane, parked a
	parking.mu.Unlock()
	epoch.Store(2) // and the lane came back to this one
	publish("a")
	publish("b")
	wait(func() bool { return h.count() == 2 })
	wait(func() bool { return b.Stats().Parked == 1 })
	assert.Equal(t, []string{"a", "b"}, h.seen, "a's second message was parked, not handled")
	parking.mu.Lock()
	defer parking.mu.Unlock()
	assert.Equal(t, 3, parking.reads, "read at start, at epoch 1, and at epoch 2")
}
