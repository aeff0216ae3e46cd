package relay_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// failingOnce is a publisher that refuses one message, once: what the
// broker took of a batch is then a part of it.
type failingOnce struct {
	mu     sync.Mutex
	failOn string
	failed bool
	took   []string
}

func (p *failingOnce) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, msg := range msgs {
		if msg.UUID == p.failOn && !p.failed {
			p.failed = true
			return errors.New("broker: not now")
		}
		p.took = append(p.took, msg.UUID)
	}
	return nil
}

func (p *failingOnce) Close() error { return nil }

func (p *failingOnce) published() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.took...)
}

type failingBus struct{ pub *failingOnce }

func (b failingBus) Publisher() message.Publisher { return b.pub }

func (failingBus) Send(context.Context, string, []*message.Message) func(error) {
	return func(error) {}
}

// When the broker takes only part of a full batch, the rows it did not
// take go first when it takes them again: every row goes in order, once.
// (It guards any batch read before the last one's fate is known, such as
// a lane's next batch read while the broker's acknowledgements are
// awaited: tried for issue 43, slower, not kept.)
func TestOrderAfterAPartialPublish(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		const rows = 10
		insertRows(t, d, "orders", 1, rows)
		clock := outboxtest.NewClock(time.Now())
		pub := &failingOnce{failOn: "m2"}
		cfg := relay.Config{BatchSize: 3, Lease: time.Hour, ProgressInterval: time.Minute, RetryInitial: time.Millisecond, RetryMax: time.Millisecond}
		r := newRelayOn(d, clock, "a", failingBus{pub}, cfg)
		r.Start()
		r.Wrote([]schema.Lane{{Topic: "orders"}})
		eventually(t, func() bool {
			clock.Advance(10 * time.Millisecond) // the backoff after the refusal, by the relay's clock
			return len(pub.published()) >= rows
		}, "every row published")
		want := make([]string, rows)
		for i := range want {
			want[i] = fmt.Sprintf("m%d", i+1)
		}
		assert.Equal(t, want, pub.published(), "in order, each once: m2 and m3 before m4")
		require.NoError(t, r.Close(context.Background()))
		assert.Zero(t, waiting(t, d), "recorded as the relay stopped")
	})
}
