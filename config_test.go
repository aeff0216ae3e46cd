package fxcqrs_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"go.yaml.in/yaml/v3"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, fxcqrs.Config{}.Validate(), "the zero Config is the seed's defaults")
	require.NoError(t, fxcqrs.Config{
		Events:       fxcqrs.EventConfig{MaxConcurrentHandlers: 8, Background: true, QueueSize: 10},
		StreamEvents: fxcqrs.EventConfig{Sequential: true},
	}.Validate())

	err := fxcqrs.Config{
		Events:       fxcqrs.EventConfig{MaxConcurrentHandlers: -1, QueueSize: -2},
		StreamEvents: fxcqrs.EventConfig{Sequential: true, Background: true},
	}.Validate()
	require.Error(t, err)
	for _, want := range []string{
		"Events.MaxConcurrentHandlers (events.maxConcurrentHandlers) must not be negative: got -1",
		"Events.QueueSize (events.queueSize) must not be negative: got -2",
		"StreamEvents.Sequential (streamEvents.sequential) and StreamEvents.Background (streamEvents.background) cannot be combined",
		"StreamEvents.Background (streamEvents.background) is not supported",
	} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = fxcqrs.New(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: -3}})
	assert.ErrorContains(t, err, "got -3", "New validates")
}

func TestConfigFromJSON(t *testing.T) {
	t.Parallel()
	var cfg fxcqrs.Config
	require.NoError(t, json.Unmarshal([]byte(`{
		"events": {"maxConcurrentHandlers": 3},
		"streamEvents": {"sequential": true}
	}`), &cfg))
	assert.Equal(t, fxcqrs.Config{
		Events:       fxcqrs.EventConfig{MaxConcurrentHandlers: 3},
		StreamEvents: fxcqrs.EventConfig{Sequential: true},
	}, cfg)
}

func TestNewReportsEveryBadHandler(t *testing.T) {
	t.Parallel()
	_, err := fxcqrs.New(fxcqrs.Config{},
		fxcqrs.WithRequestHandlers(&placeOrderHandler{}, &otherPlaceOrderHandler{}),
		fxcqrs.WithCommandHandlers(notAHandler{}, nil),
		fxcqrs.WithStreamHandlers(&placeOrderHandler{}),
	)
	require.Error(t, err)
	for _, want := range []string{
		"PlaceOrder has two handlers",
		"fxcqrs_test.notAHandler has no method Handle",
		"command handler is nil",
		"a stream handler needs Handle(context.Context, Req) iter.Seq2[Res, error]",
	} {
		assert.Contains(t, err.Error(), want)
	}
}

// A setting that is merely unused does not stop the service: a limit
// beside Sequential (switched on to debug, or by a feature flag) and a
// QueueSize without Background are accepted, and the mediator says once,
// at info level, that it ignores them.
func TestConfigUnusedSettingsAreLoggedNotRefused(t *testing.T) {
	t.Parallel()
	var cfg fxcqrs.Config
	require.NoError(t, yaml.Unmarshal([]byte(`
events: {maxConcurrentHandlers: 8, sequential: true}
streamEvents: {queueSize: 50}
`), &cfg))
	require.NoError(t, cfg.Validate())

	core, logs := observer.New(zapcore.InfoLevel)
	m, err := fxcqrs.New(cfg, fxcqrs.WithLogger(zap.New(core)))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	ignored := logs.FilterMessageSnippet("setting ignored").All()
	require.Len(t, ignored, 2)
	assert.Contains(t, ignored[0].Message, "Events.MaxConcurrentHandlers (events.maxConcurrentHandlers) is 8 but has no effect")
	assert.Contains(t, ignored[1].Message, "StreamEvents.QueueSize (streamEvents.queueSize) is 50 but has no effect")
	assert.Equal(t, zapcore.InfoLevel, ignored[0].Level)
}

// Durations in configuration read as people write them, in JSON and YAML,
// while nanoseconds keep working and the fields stay time.Duration.
func TestDurationsDecode(t *testing.T) {
	t.Parallel()
	type settings struct {
		Retry    fxcqrs.RetryPolicy `json:"retry" yaml:"retry"`
		Timeouts fxcqrs.Timeouts    `json:"timeouts" yaml:"timeouts"`
	}
	want := settings{
		Retry:    fxcqrs.RetryPolicy{Attempts: 5, Initial: 50 * time.Millisecond, Max: 2 * time.Second, Multiplier: 3, Jitter: 0.1},
		Timeouts: fxcqrs.Timeouts{Request: 2 * time.Second, Command: 1500 * time.Millisecond, Stream: time.Minute, Event: 250 * time.Millisecond},
	}
	t.Run("json strings", func(t *testing.T) {
		var got settings
		require.NoError(t, json.Unmarshal([]byte(`{
			"retry": {"attempts": 5, "initial": "50ms", "max": "2s", "multiplier": 3, "jitter": 0.1},
			"timeouts": {"request": "2s", "command": "1.5s", "stream": "1m", "event": "250ms"}
		}`), &got))
		assert.Equal(t, want, got)
	})
	t.Run("json nanoseconds", func(t *testing.T) {
		var got settings
		require.NoError(t, json.Unmarshal([]byte(`{
			"retry": {"attempts": 5, "initial": 50000000, "max": 2000000000, "multiplier": 3, "jitter": 0.1},
			"timeouts": {"request": 2000000000, "command": 1500000000, "stream": 60000000000, "event": 250000000}
		}`), &got))
		assert.Equal(t, want, got)
	})
	t.Run("json round trip", func(t *testing.T) {
		b, err := json.Marshal(want)
		require.NoError(t, err)
		var got settings
		require.NoError(t, json.Unmarshal(b, &got))
		assert.Equal(t, want, got)
	})
	t.Run("json keeps fields it is not given", func(t *testing.T) {
		got := fxcqrs.RetryPolicy{Attempts: 7, Max: time.Second}
		require.NoError(t, json.Unmarshal([]byte(`{"initial": "5ms"}`), &got))
		assert.Equal(t, fxcqrs.RetryPolicy{Attempts: 7, Initial: 5 * time.Millisecond, Max: time.Second}, got)
	})
	t.Run("json bad duration", func(t *testing.T) {
		var got fxcqrs.Timeouts
		assert.ErrorContains(t, json.Unmarshal([]byte(`{"request": "soon"}`), &got), `invalid duration "soon"`)
		assert.ErrorContains(t, json.Unmarshal([]byte(`{"request": true}`), &got), "want a duration")
	})
	t.Run("yaml strings and nanoseconds", func(t *testing.T) {
		for _, doc := range []string{`
retry: {attempts: 5, initial: 50ms, max: 2s, multiplier: 3, jitter: 0.1}
timeouts: {request: 2s, command: 1.5s, stream: 1m, event: 250ms}
`, `
retry: {attempts: 5, initial: 50000000, max: 2000000000, multiplier: 3, jitter: 0.1}
timeouts: {request: 2000000000, command: 1500000000, stream: 60000000000, event: 250000000}
`} {
			var got settings
			require.NoError(t, yaml.Unmarshal([]byte(doc), &got))
			assert.Equal(t, want, got)
		}
	})
}
