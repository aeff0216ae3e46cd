package fxbus

import (
	"github.com/ThreeDotsLabs/watermill"
	"go.uber.org/zap"
)

// zapAdapter lets Watermill log through the application's zap logger.
type zapAdapter struct{ log *zap.Logger }

func newLogger(log *zap.Logger) watermill.LoggerAdapter {
	if log == nil {
		return watermill.NopLogger{}
	}
	return zapAdapter{log: log}
}

func fields(f watermill.LogFields) []zap.Field {
	out := make([]zap.Field, 0, len(f))
	for k, v := range f {
		out = append(out, zap.Any(k, v))
	}
	return out
}

func (a zapAdapter) Error(msg string, err error, f watermill.LogFields) {
	a.log.Error(msg, append(fields(f), zap.Error(err))...)
}

func (a zapAdapter) Info(msg string, f watermill.LogFields) { a.log.Info(msg, fields(f)...) }

// Debug converts the fields only when debug is on: the router logs each
// message at this level.
func (a zapAdapter) Debug(msg string, f watermill.LogFields) {
	if ce := a.log.Check(zap.DebugLevel, msg); ce != nil {
		ce.Write(fields(f)...)
	}
}

// Trace goes to debug: zap has no lower level.
func (a zapAdapter) Trace(msg string, f watermill.LogFields) { a.Debug(msg, f) }

func (a zapAdapter) With(f watermill.LogFields) watermill.LoggerAdapter {
	return zapAdapter{log: a.log.With(fields(f)...)}
}
