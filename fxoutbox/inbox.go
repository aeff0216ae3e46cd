package fxoutbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fxcqrs/fxcqrs"
)

// The inbox's upkeep: its records' clean-up, and the check that it can
// tell a service's handlers apart.

// inboxBatch bounds one clean-up statement, so that it holds its locks
// briefly however many records are due.
const inboxBatch = 1000

// CleanInbox deletes the inbox's records older than InboxRetention by the
// outbox's clock, in batches of a bounded size, and returns how many it
// deleted. The relay runs it in the background on every replica (they may
// run it at once); call it yourself from a job if you prefer.
func (o *Outbox) CleanInbox(ctx context.Context) (int64, error) {
	cutoff := o.cfg.Now().Add(-o.cfg.InboxRetention).UnixNano()
	var total int64
	for {
		res, err := o.db.ExecContext(ctx, o.q.InboxCleanup, cutoff, inboxBatch)
		if err != nil {
			return total, fmt.Errorf("fxoutbox: clean the inbox: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("fxoutbox: clean the inbox: %w", err)
		}
		total += n
		if n < inboxBatch {
			return total, nil
		}
	}
}

// checkInboxNames refuses two handlers of one event that the inbox would
// take for one: it knows a handler by its type's name, so that the second
// of two handlers of one type (two values of one function adapter or of
// one struct) would be skipped as a redelivery of the first.
// Checked for the events the inbox records: every one with Config.Inbox,
// else the durable ones.
func checkInboxNames(m *fxcqrs.Mediator, reg *deliverables, inbox bool) error {
	var errs []error
	for _, t := range m.EventTypes() {
		if !inbox && !reg.durable(t) {
			continue
		}
		seen := map[string]bool{}
		for _, name := range m.EventHandlers(t) {
			if seen[name] {
				errs = append(errs, fmt.Errorf("fxoutbox: %v has two handlers of one type, %s: the inbox knows a handler by its type's name and would run only the first of them for each message; give each a type of its own (a named type per handler)", t, name))
				break
			}
			seen[name] = true
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}
