package relay

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/stretchr/testify/assert"
	"go.uber.org/zap"
)

type idleBus struct{}

func (idleBus) Publisher() message.Publisher { return nil }

func (idleBus) Send(context.Context, string, []*message.Message) func(error) { return func(error) {} }

// A tenant's store that waits for its backoff (its delete hung, say,
// with its progress left to record) does not wake the relay for its
// window that ended: the relay asked for a wait of none, pass after
// pass, until the backoff passed (found with a store that hung in the
// middle of a batch: some 1,500 passes a second). Its window is
// recorded in its next turn; a store that does not wait still wakes it.
func TestWindowOfAStoreInBackoffWakesNoPass(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	var asked []time.Duration
	after := func(d time.Duration) <-chan time.Time {
		asked = append(asked, d)
		return make(chan time.Time)
	}
	r := New(Params{
		Bus: idleBus{}, Log: zap.NewNop(), Config: Config{ProgressInterval: time.Second},
		Now: clock, WallNow: clock, WallAfter: after,
	})
	p := r.newPart(Store{ID: "t"})
	r.parts, r.byID["t"] = append(r.parts, p), p
	p.sender.progress[schema.Lane{Topic: "orders"}] = &progress{ids: []int64{1}, since: now.Add(-time.Minute)}

	p.retryAt = now.Add(time.Second)
	assert.Nil(t, r.windowEnd(true), "its backoff holds its window")
	assert.Empty(t, asked)

	p.retryAt = now
	assert.NotNil(t, r.windowEnd(true), "its backoff over: its window ended")
	assert.Equal(t, []time.Duration{0}, asked)
}
