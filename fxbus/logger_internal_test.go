package fxbus

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/assert"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The router logs each message at debug (and trace) level: with debug
// off, that costs no allocation; with it on, the fields are all there.
func TestWatermillDebugLogsCostNothingWhenOff(t *testing.T) {
	f := watermill.LogFields{"message_uuid": "m-1", "topic": "orders"}
	off := newLogger(zap.NewNop())
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		off.Debug("Received message", f)
		off.Trace("Received message", f)
	}))

	core, logs := observer.New(zapcore.DebugLevel)
	on := newLogger(zap.New(core))
	on.Debug("Received message", f)
	on.Trace("Message acked", f)
	if assert.Equal(t, 2, logs.Len()) {
		for _, e := range logs.All() {
			assert.Equal(t, zapcore.DebugLevel, e.Level)
			assert.Equal(t, map[string]any{"message_uuid": "m-1", "topic": "orders"}, e.ContextMap())
		}
	}
}
