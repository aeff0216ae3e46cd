package fxoutbox_test

import (
	"context"
	"database/sql"
	"math"
	"testing"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
)

// TestAllocationsPerUnitOfWork pins the heap allocations of a command
// through the unit of work that writes one routed event to the outbox, on
// the driver of BenchmarkGoCostPerCommand that does nothing: a count that
// does not depend on the machine, so that a change that adds one fails
// here. Under -race it is skipped.
//
// Of the 34: the mediator's call, its frame and the event it emitted
// (see the root package's TestAllocationsPerCall); database/sql's
// transaction, its context and the goroutine watching it, and each
// statement's arguments converted for the driver; the unit and its
// context: one allocation (the unit is the context its calls run in);
// the bus's encoding of the event (its message, id, payload and
// metadata); and the outbox row's insert, whose arguments are boxed once
// each (the id, the payload, the metadata, the time), the topic's name
// once per topic. It was 36 before those last two.
func TestAllocationsPerUnitOfWork(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	db := sql.OpenDB(noopConnector{})
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxIdleConns(4)
	m := outboxMediator(t, db, fxoutbox.PostgreSQL, fxoutbox.PostgreSQL.Rebind("INSERT INTO orders (id) VALUES (?)"))
	ctx := context.Background()
	var err error
	// AllocsPerRun counts the process's allocations: another test's
	// goroutines still winding down (a relay, a pool's connections) add
	// to one measure, never take from it. The least of a few is the
	// command's own.
	got := math.Inf(1)
	for range 5 {
		got = min(got, testing.AllocsPerRun(1000, func() {
			if e := fxcqrs.Exec(ctx, m, PlaceOrder{ID: 1000}); e != nil {
				err = e
			}
		}))
	}
	assert.NoError(t, err)
	assert.LessOrEqual(t, got, 34.0, "allocations per command through the unit of work")
}
