package fxcqrs

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Logging logs one line per call and per event handler invocation, named
// "fxcqrs", with its kind, message type, handler, duration and error:
// successes at debug level (free when debug is disabled), failures at the
// level [ErrorLevel] chooses, error by default.
//
// A call's line reports what its caller receives, events included: a Send
// whose handler succeeded but whose event handlers failed is logged as
// "handled, events failed" with the *EventError. The mediator writes that
// line once the call's events have run, since they run after the
// middleware chain has returned (a unit of work in middleware commits
// before in-process event handlers run).
func Logging(log *zap.Logger, opts ...LoggingOption) Middleware {
	if log == nil {
		log = zap.NewNop()
	}
	l := logging{log: log.Named("fxcqrs"), level: func(error) zapcore.Level { return zapcore.ErrorLevel }}
	for _, opt := range opts {
		opt(&l)
	}
	return l
}

// LoggingOption configures [Logging].
type LoggingOption func(*logging)

// ErrorLevel sets the level of a failure's line, per error. Handler errors
// are business outcomes as often as faults: an out-of-stock answer can go
// out at info level while a lost connection stays at error.
//
//	fxcqrs.Logging(log, fxcqrs.ErrorLevel(func(err error) zapcore.Level {
//		if errors.Is(err, ErrOutOfStock) {
//			return zapcore.InfoLevel
//		}
//		return zapcore.ErrorLevel
//	}))
func ErrorLevel(level func(err error) zapcore.Level) LoggingOption {
	return func(l *logging) {
		if level != nil {
			l.level = level
		}
	}
}

type logging struct {
	log   *zap.Logger
	level func(error) zapcore.Level
}

func (logging) MiddlewareOrder() int { return OrderLogging }

// Handle logs an event handler invocation. A call's line is written by
// callEnded, once the caller's result is known.
func (l logging) Handle(ctx context.Context, call Call, next Next) (any, error) {
	if call.Kind != KindEvent {
		return next(ctx)
	}
	start := time.Now()
	out, err := next(ctx)
	l.write(call, err, time.Since(start))
	return out, err
}

func (l logging) callEnded(_ context.Context, call Call, err error, elapsed time.Duration) {
	l.write(call, err, elapsed)
}

func (l logging) write(call Call, err error, elapsed time.Duration) {
	level, msg := zapcore.DebugLevel, "handled"
	if err != nil {
		level, msg = l.level(err), "failed"
		var evErr *EventError
		if call.Kind != KindEvent && errors.As(err, &evErr) {
			msg = "handled, events failed"
		}
	}
	if ce := l.log.Check(level, msg); ce != nil {
		ce.Write(
			zap.Stringer("kind", call.Kind),
			zap.String("messageType", call.MessageType),
			zap.String("handler", call.Handler),
			zap.Duration("duration", elapsed),
			zap.Error(err),
		)
	}
}
