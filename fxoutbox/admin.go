package fxoutbox

import (
	"database/sql"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/admin"
)

// The read and repair API, handed on from its own package
// (internal/admin): it needs only the database, and the console and the
// command line use it.

// Admin reads and repairs what the outbox's tables hold: the read API
// (Backlog, Lag, DeadLetters, Scheduled, Leases), the dead letters,
// listed (ListDead, Dead), replayed (Replay) and discarded (Discard), the
// parked keys of ordered subscriptions (ParkedKeys, Release), and the
// record of every repair (Repairs). It needs only the database: no bus,
// no relay, no running service (the command line, cmd/fxcqrs, uses it),
// and it is safe to use while replicas run: a replay is one transaction,
// which the relays see as new rows. It is the bus's
// fxbus.DeadLetterRecorder and fxbus.Parking under fxoutbox.Module.
//
// It reads and repairs every tenant's rows; Admin.ForTenant gives one for
// a single tenant's ("" is the default tenant's), whose repairs skip
// every other tenant's letters. Every repair is recorded with the tenant
// of the letters it repaired (Repair.Tenant). With tenant stores, see
// Outbox.AdminOf.
type Admin = admin.Admin

// NewAdmin returns the Admin of db's outbox tables (t: defaults for the
// empty names), on the clock now (nil: time.Now), which must be the
// services' for the lags and ages it reports to mean anything.
func NewAdmin(db *sql.DB, d Dialect, t Tables, now func() time.Time) (*Admin, error) {
	return admin.New(db, d, t, now)
}

// DeadLetter is one row the relay could not deliver, or whose delivery in
// this service failed for good, or (Inbound) a message a subscription of
// this service dead-lettered. Its ID is positive for the outbox's letters
// and negative for inbound ones: Replay and Discard take either.
type DeadLetter = admin.DeadLetter

// DeadLetterFilter selects dead letters for Admin.ListDead; its zero
// value selects every one that was not discarded, of every tenant (its
// Tenant, a pointer, tells "every tenant" (nil) from the default
// tenant's).
type DeadLetterFilter = admin.DeadLetterFilter

// Repair is one recorded repairing action (a replay, a discard), with
// who asked, why, and the tenant of what it repaired.
type Repair = admin.Repair

// Lease is which relay owns what, until when: a topic's lane, the right
// to move due schedules ("fxcqrs:scheduled"), or a relay's own member
// lease ("fxcqrs:relay:" and its owner id).
type Lease = admin.Lease

// TopicBacklog is what waits in the outbox for one topic: its rows, those
// due, and the lag of the oldest due one.
type TopicBacklog = admin.TopicBacklog

// TopicDeadLetters is the dead letters of one topic: how many, and when
// the newest failed.
type TopicDeadLetters = admin.TopicDeadLetters

// ScheduledSummary is what waits for its time: how many scheduled
// messages, and when the next is due.
type ScheduledSummary = admin.ScheduledSummary

// ParkedBehind begins the error of a dead letter that did not fail but
// was parked behind its key's first one (see fxbus.InOrder).
const ParkedBehind = admin.ParkedBehind
