package fxoutbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs"
	fxbus "github.com/fxcqrs/fxcqrs/bus"
)

type txKey struct{}

// unit is one unit of work's transaction and the outbox rows written in
// it, nested calls' included: a commit that wrote none wakes no relay.
type unit struct {
	tx    *sql.Tx
	wrote int
}

// Tx returns the transaction of the unit of work ctx belongs to, for the
// handler's repositories to write in, or nil outside a unit of work.
func Tx(ctx context.Context) *sql.Tx {
	if un := unitOf(ctx); un != nil {
		return un.tx
	}
	return nil
}

func unitOf(ctx context.Context) *unit {
	un, _ := ctx.Value(txKey{}).(*unit)
	return un
}

// OrderUnitOfWork is the unit of work's middleware position: inside
// Retry (each attempt has a transaction of its own, so a failed attempt's
// writes are rolled back with it) and inside Timeout.
const OrderUnitOfWork = fxcqrs.OrderRetry + 100

// unitOfWork is the middleware that wraps a handler in a transaction and
// writes the routed events it emitted to the outbox before it commits.
type unitOfWork struct {
	db      *sql.DB
	q       queries
	bus     *fxbus.Bus
	wake    func()
	inbox   bool
	eagerEv bool             // event handlers get a transaction before they run
	now     func() time.Time // the outbox's clock: what the inbox records
}

func (u *unitOfWork) MiddlewareOrder() int { return OrderUnitOfWork }

func (u *unitOfWork) Handle(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
	if call.Kind == fxcqrs.KindStream {
		return next(ctx) // a stream's items are not one unit of work
	}
	if outer := unitOf(ctx); outer != nil {
		// A call nested in another's unit of work joins it.
		out, err := next(ctx)
		if err == nil {
			err = u.write(ctx, outer)
		}
		return out, err
	}
	inbound := call.Kind == fxcqrs.KindEvent && u.inbox && fxbus.MessageID(ctx) != ""
	if call.Kind == fxcqrs.KindEvent && !u.eagerEv && !inbound {
		return u.lazy(ctx, next)
	}
	tx, err := u.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: begin: %w", err)
	}
	un := &unit{tx: tx}
	ctx = context.WithValue(ctx, txKey{}, un)
	if inbound {
		res, err := tx.ExecContext(ctx, u.q.inboxInsert, call.Handler, fxbus.MessageID(ctx), u.now().UnixNano())
		if err == nil {
			var n int64
			if n, err = res.RowsAffected(); err == nil && n == 0 {
				// This handler has handled this message: a redelivery.
				return nil, tx.Rollback()
			}
		}
		if err != nil {
			_ = tx.Rollback()
			return nil, fmt.Errorf("fxoutbox: inbox: %w", err)
		}
	}
	out, err := next(ctx)
	if err == nil {
		err = u.write(ctx, un)
	}
	if err != nil {
		return out, errors.Join(err, rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return out, fmt.Errorf("fxoutbox: commit: %w", err)
	}
	if un.wrote > 0 {
		u.wake()
	}
	return out, nil
}

// lazy runs an event handler without a transaction, and writes the routed
// follow-ups it emitted in a transaction of their own.
func (u *unitOfWork) lazy(ctx context.Context, next fxcqrs.Next) (any, error) {
	out, err := next(ctx)
	if err != nil || !u.routes(fxcqrs.Emitted(ctx)) {
		return out, err
	}
	tx, err := u.db.BeginTx(ctx, nil)
	if err != nil {
		return out, fmt.Errorf("fxoutbox: begin: %w", err)
	}
	if err := u.write(ctx, &unit{tx: tx}); err != nil {
		return out, errors.Join(err, rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return out, fmt.Errorf("fxoutbox: commit: %w", err)
	}
	u.wake()
	return out, nil
}

func (u *unitOfWork) routes(events []any) bool {
	for _, ev := range events {
		if u.bus.Forwards(typeOf(ev)) {
			return true
		}
	}
	return false
}

func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("fxoutbox: rollback: %w", err)
	}
	return nil
}

// write inserts the routed events the handler of ctx emitted, in emit
// order, in un's transaction, and counts them on un.
func (u *unitOfWork) write(ctx context.Context, un *unit) error {
	out, fails := u.bus.Messages(ctx, fxcqrs.Emitted(ctx))
	if len(fails) > 0 {
		return &fxbus.PublishError{Failures: fails}
	}
	for _, o := range out {
		meta, err := json.Marshal(o.Message.Metadata)
		if err != nil {
			return fmt.Errorf("fxoutbox: metadata of %s: %w", o.Message.UUID, err)
		}
		if _, err := un.tx.ExecContext(ctx, u.q.insert, o.Topic, o.Message.UUID, []byte(o.Message.Payload), string(meta)); err != nil {
			return fmt.Errorf("fxoutbox: write to the outbox: %w", err)
		}
		un.wrote++
	}
	return nil
}
