package relay

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// What stops a relay's pass, as it says it.

// brokerError is a publish the broker refused or could not take.
type brokerError struct{ err error }

func (e *brokerError) Error() string { return e.err.Error() }
func (e *brokerError) Unwrap() error { return e.err }

// logFailure says what stopped a pass: the broker, the database's
// connection, or the database itself (a missing table, a constraint),
// which no wait mends and which is logged at error level.
func (r *Relay) logFailure(err error, retryIn time.Duration) {
	var be *brokerError
	switch {
	case errors.As(err, &be) && onlyBroker(err):
		r.log.Warn("relay: the broker is unavailable or refused; rows wait", zap.Error(err), zap.Duration("retryIn", retryIn))
	case r.db.PingContext(context.Background()) != nil:
		r.log.Warn("relay: the database is unreachable; rows wait", zap.Error(err), zap.Duration("retryIn", retryIn))
	default:
		r.log.Error("relay: the database refused a statement (not the broker, not the connection): check the schema (fxoutbox.Migrate) and the database's log; rows wait",
			zap.Error(err), zap.Duration("retryIn", retryIn))
	}
}

// onlyBroker reports whether every error joined in err is the broker's.
func onlyBroker(err error) bool {
	var be *brokerError
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			if !errors.As(e, &be) {
				return false
			}
		}
		return true
	}
	return errors.As(err, &be)
}
