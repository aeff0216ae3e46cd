package bustest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A message received after its deliver-by time is dead-lettered with the
// reason "expired", never handled; one received in time is handled. Both
// are made by a route with fxbus.DeliverWithin on a producer's bus, so
// that the deliver-by crosses the broker in the metadata, and judged by
// the consumer's clock, fixed: the first was made two minutes before it
// (a minute to live), the second at it.
func (s *suite) expiry(t *testing.T) {
	tp := s.topic(t, "expiry")
	_, deadSub := s.open(t, group(tp, "dead"), tp+"_poison")
	dead := subscribe(t, deadSub, tp+"_poison")
	pub, sub := s.open(t, group(tp, "a"), tp, tp+"_poison")
	now := time.Now().UTC()
	var (
		mu      sync.Mutex
		handled []int
	)
	c := consume(t, pub, sub, tp, consumerConfig{now: func() time.Time { return now }}, func(_ context.Context, e Keyed) error {
		mu.Lock()
		handled = append(handled, e.Seq)
		mu.Unlock()
		return nil
	})

	producerPub, _ := s.a.Open(t, group(tp, "p"))
	var (
		clockMu  sync.Mutex
		producer = now.Add(-2 * time.Minute)
	)
	prod, err := fxbus.New(fxbus.Config{Publisher: producerPub, Now: func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return producer
	}}, []fxbus.Routing{fxbus.NewRoute[Keyed](tp, fxbus.Name(keyedName), fxbus.DeliverWithin(time.Minute))}, nil)
	require.NoError(t, err)
	require.NoError(t, prod.Forward(context.Background(), []any{Keyed{Key: "late", Seq: 1}}), "publish the late one")
	clockMu.Lock()
	producer = now
	clockMu.Unlock()
	require.NoError(t, prod.Forward(context.Background(), []any{Keyed{Key: "in-time", Seq: 2}}), "publish the one in time")

	msg := receive(t, dead, 1, true)[0]
	assert.JSONEq(t, `{"key":"late","seq":1}`, string(msg.Payload), "the late one is dead-lettered")
	reason := msg.Metadata.Get(middleware.ReasonForPoisonedKey)
	assert.True(t, strings.HasPrefix(reason, "expired"), "the reason is %q", reason)
	assert.Equal(t, now.Add(-time.Minute).Format("2006-01-02T15:04:05.000000000Z07:00"), msg.Metadata.Get(fxbus.MetadataDeliverBy),
		"the dead letter keeps its deliver-by")
	require.True(t, waitFor(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) > 0
	}), "the one in time was not handled")
	require.True(t, waitFor(func() bool { return c.bus.Stats().Handled == 1 }))
	mu.Lock()
	assert.Equal(t, []int{2}, handled, "only the one in time is handled")
	mu.Unlock()
	st := c.bus.Stats()
	assert.Equal(t, uint64(1), st.Expired, "counted as expired")
	assert.Equal(t, uint64(1), st.DeadLettered, "among the dead-lettered")
}
