package fxoutbox

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// leftovers is the mediator's Forwarder under the outbox. The unit of work
// writes what the calls it wraps emitted, and marks it so; what no unit of
// work wrapped (a stream's items) reaches leftovers, which writes the
// routed events in a transaction of their own: through the outbox, never
// published directly, never lost. A durable event there has no
// transaction to be written in, and its handlers run from memory: it says
// so, once per type, instead of weakening the promise in silence.
type leftovers struct {
	u      *unitOfWork
	log    *zap.Logger
	warned sync.Map // reflect.Type → struct{}
}

func (l *leftovers) Forwards(t reflect.Type) bool {
	return l.u.bus.Forwards(t) || l.u.local.registry().durable(t)
}

func (l *leftovers) Forward(ctx context.Context, events []any) error {
	routed := events[:0:0]
	for _, ev := range events {
		t := reflect.TypeOf(ev)
		if l.u.bus.Forwards(t) {
			routed = append(routed, ev)
		}
		if l.u.local.registry().durable(t) {
			if _, seen := l.warned.LoadOrStore(t, struct{}{}); !seen {
				l.log.Warn("a durable event was emitted where no unit of work runs (a stream item, or a call the unit of work is not scoped to): "+
					"its handlers run from memory, best-effort, and a crash after the call loses them; emit it from a command",
					zap.Stringer("event", t))
			}
		}
	}
	if len(routed) == 0 {
		return nil
	}
	events = routed
	tx, err := l.u.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("fxoutbox: begin: %w", err)
	}
	un := &unit{tx: tx, u: l.u}
	if err := l.u.writeRouted(ctx, un, events); err != nil {
		return errors.Join(err, schema.Rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("fxoutbox: commit: %w", err)
	}
	l.u.committed(un)
	return nil
}
