package fxoutbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	errTooLarge = errors.New("message too large")
	errDown     = errors.New("connection refused")
)

// pickyPublisher refuses one topic's messages as too large and another's
// as if its broker were down; it keeps the rest.
type pickyPublisher struct {
	mu   sync.Mutex
	kept map[string]int
}

func (p *pickyPublisher) Publish(topic string, msgs ...*message.Message) error {
	switch topic {
	case "poison":
		return errTooLarge
	case "down":
		return errDown
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kept[topic] += len(msgs)
	return nil
}

func (p *pickyPublisher) Close() error { return nil }

func (p *pickyPublisher) got(topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kept[topic]
}

// A row whose message the broker refuses as invalid goes to the dead
// letter table, counted; a topic whose broker is down waits; neither holds
// the other topics back.
func TestDeadLetterAndNoTopicHoldsAnother(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		pub := &pickyPublisher{kept: map[string]int{}}
		bus, err := fxbus.New(fxbus.Config{Publisher: pub}, nil, nil)
		require.NoError(t, err)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
			PollInterval: 10 * time.Millisecond, RetryInitial: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond,
			Undeliverable: func(err error) bool { return errors.Is(err, errTooLarge) },
		}}, nil)
		require.NoError(t, err)
		for _, topic := range []string{"poison", "down", "fine", "fine"} {
			_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata) VALUES (?, ?, ?, '{}')"),
				topic, watermill.NewUUID(), []byte(`{}`))
			require.NoError(t, err)
		}
		require.NoError(t, o.Start(context.Background()))
		t.Cleanup(func() { require.NoError(t, o.Stop(context.Background())) })
		waitFor(t, func() bool { return pub.got("fine") == 2 && o.Stats().DeadLettered == 1 })
		waitFor(t, func() bool { return o.Stats().PublishFailures >= 2 }) // the down topic was tried again
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead"))
		var reason string
		require.NoError(t, d.DB.QueryRow("SELECT error FROM fxcqrs_outbox_dead").Scan(&reason))
		assert.Contains(t, reason, "too large")
		// The fine rows are deleted once their window has passed
		// (RelayConfig.ProgressInterval); the down topic's row waits.
		waitFor(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox") == 1 })
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE topic = 'down'"), "the down topic's row waits")
	})
}
