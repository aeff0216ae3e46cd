package fxoutbox

import "github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"

// wakeFunc is called for a commit's wake in place of the relay.
type wakeFunc func()

func (f wakeFunc) WroteIn(string, []schema.Lane) { f() }

// SetWake replaces what a commit of o's unit of work calls to wake the
// relay, for tests.
func SetWake(o *Outbox, wake func()) { o.uow.sender = wakeFunc(wake) }

// Passes returns how many passes o's relay and rounds its schedule
// promoter have run, for tests that must see them look without
// delivering.
func Passes(o *Outbox) uint64 { return o.relay.Passes() + o.promoter.Rounds() }

// DueQueries returns the statements by which o's relay finds its due
// schedules and the earliest one, with PostgreSQL's placeholders, for
// tests that read their query plans.
func DueQueries(o *Outbox) (due, next string) { return o.q.DueIDs, o.q.NextDue }

// Wake wakes o's relay as a commit of its unit of work that wrote to
// topic does, for a benchmark's plain transactions to be delivered as
// promptly.
func Wake(o *Outbox, topic string) { o.relay.Wrote([]schema.Lane{{Topic: topic}}) }

// RelayPasses returns how many passes o's relay has run, for the tests
// that count passes between tenants.
func RelayPasses(o *Outbox) uint64 { return o.relay.Passes() }
