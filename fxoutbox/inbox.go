package fxoutbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// The check that the inbox can tell a service's handlers apart (its
// records' clean-up is upkeep's InboxCleaner), and the lane's fence.

// fenced refuses to commit an inbound handler's inbox record and effects
// once its message's lane is no longer this replica's (an adapter that
// shares lanes among replicas, fxbus.LaneLease): a replica that stalled
// past its lease rolls back instead of committing beside the lane's new
// owner, and the bus gives the message back (fxbus.ErrFenced). Checked
// right before the commit, by the lease's clock and its margin.
func fenced(ctx context.Context) error {
	if err := fxbus.Fenced(ctx); err != nil {
		return fmt.Errorf("fxoutbox: inbox of message %s: %w", fxbus.MessageID(ctx), err)
	}
	return nil
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
