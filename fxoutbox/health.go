package fxoutbox

import (
	"context"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs"
)

// The outbox's health checks, and its read API on its own clock (see
// Admin).

// Checks are the outbox's health checks (fxoutbox.Module registers them
// for fxcqrs.HealthModule):
//   - fxoutbox.schema, liveness: the database answers and its tables are
//     at the version this code needs (one read of the migrations table);
//   - fxoutbox.relay, readiness: the relay's lag (Lag: a row per topic)
//     is within Config.MaxLag. A poison message or a broker away makes a
//     replica unready, not dead: restarting it would not help.
func (o *Outbox) Checks() []fxcqrs.Check {
	return []fxcqrs.Check{
		{Name: "fxoutbox.schema", Run: func(ctx context.Context) error {
			return CheckSchema(ctx, o.db, o.cfg.Dialect, o.cfg.Tables)
		}},
		{Name: "fxoutbox.relay", Readiness: true, Run: func(ctx context.Context) error {
			lag, err := o.admin.Lag(ctx)
			if err != nil {
				return err
			}
			if lag > o.cfg.MaxLag {
				return fmt.Errorf("the relay is %v behind, over Config.MaxLag (%v)", lag, o.cfg.MaxLag)
			}
			return nil
		}},
	}
}

// Backlog is Admin.Backlog.
func (o *Outbox) Backlog(ctx context.Context) ([]TopicBacklog, error) { return o.admin.Backlog(ctx) }

// Lag is Admin.Lag.
func (o *Outbox) Lag(ctx context.Context) (time.Duration, error) { return o.admin.Lag(ctx) }

// DeadLetters is Admin.DeadLetters.
func (o *Outbox) DeadLetters(ctx context.Context) ([]TopicDeadLetters, error) {
	return o.admin.DeadLetters(ctx)
}

// Scheduled is Admin.Scheduled.
func (o *Outbox) Scheduled(ctx context.Context) (ScheduledSummary, error) {
	return o.admin.Scheduled(ctx)
}
