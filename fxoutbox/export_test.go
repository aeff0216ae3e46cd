package fxoutbox

import "github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"

// countWakes calls wake for a commit's wake in place of the relay's; a
// commit's schedules still reach the relay.
type countWakes struct {
	announcer
	wake func()
}

func (c countWakes) Wrote([]schema.Lane) { c.wake() }

// SetWake replaces what a commit of o's unit of work calls to wake the
// relay, for tests.
func SetWake(o *Outbox, wake func()) { o.uow.relay = countWakes{o.uow.relay, wake} }

// Passes returns how many passes o's relay has run, for tests that must
// see it pass without delivering.
func Passes(o *Outbox) uint64 { return o.relay.Passes() }

// DueQueries returns the statements by which o's relay finds its due
// schedules and the earliest one, with PostgreSQL's placeholders, for
// tests that read their query plans.
func DueQueries(o *Outbox) (due, next string) { return o.q.DueIDs, o.q.NextDue }

// Wake wakes o's relay as a commit of its unit of work that wrote to
// topic does, for a benchmark's plain transactions to be delivered as
// promptly.
func Wake(o *Outbox, topic string) { o.relay.Wrote([]schema.Lane{{Topic: topic}}) }
