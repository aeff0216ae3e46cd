package fxcqrs_test

import (
	"context"
	"encoding/json"
	"testing"

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
