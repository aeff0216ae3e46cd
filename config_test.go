package fxcqrs_test

import (
	"encoding/json"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, fxcqrs.Config{}.Validate(), "the zero Config is the seed's defaults")
	require.NoError(t, fxcqrs.Config{
		Events:       fxcqrs.EventConfig{MaxConcurrentHandlers: 8, Background: true, QueueSize: 10},
		StreamEvents: fxcqrs.EventConfig{Sequential: true},
	}.Validate())

	err := fxcqrs.Config{
		Events:       fxcqrs.EventConfig{MaxConcurrentHandlers: -1, QueueSize: 5},
		StreamEvents: fxcqrs.EventConfig{Sequential: true, MaxConcurrentHandlers: 2, Background: true},
	}.Validate()
	require.Error(t, err)
	for _, want := range []string{
		"Events.MaxConcurrentHandlers must not be negative: got -1",
		"Events.QueueSize (5) has no effect without Events.Background",
		"StreamEvents.MaxConcurrentHandlers (2) has no effect with StreamEvents.Sequential",
		"StreamEvents.Sequential and StreamEvents.Background cannot be combined",
		"StreamEvents.Background is not supported",
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
