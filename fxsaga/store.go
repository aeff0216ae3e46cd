package fxsaga

import (
	"context"
	"errors"
	"time"
)

// What a runner keeps its sagas in, and what tools read of them.

// ErrFenced is the error of a save by an owner that is no longer the
// saga's: another saved since (it took the saga over). The step's
// transaction rolls back with it.
var ErrFenced = errors.New("fxsaga: the saga was saved by another owner since")

// Store keeps sagas' states and logs: what a Runner needs. Save must fail
// with ErrFenced when the stored version is not st.Version-1; under a unit
// of work it writes in ctx's transaction, so that a step's writes and the
// saga's state commit together.
type Store interface {
	// Load returns a saga's state, in ctx's unit of work's transaction if
	// it has one.
	Load(ctx context.Context, id string) (State, error)
	// Create stores a new saga.
	Create(ctx context.Context, st State) error
	// Save stores st if the stored version is st.Version-1, else returns
	// ErrFenced.
	Save(ctx context.Context, st State) error
	// Log appends an entry to a saga's log.
	Log(ctx context.Context, e Entry) error
	// Claim takes over at most limit of the Running or Compensating sagas
	// of name that no live owner drives, for recovery (a Waiting saga is
	// never claimed); a store shared by several processes bumps their
	// versions (fencing the old owner) and returns them bumped. The Runner
	// never drives twice a saga it already drives.
	Claim(ctx context.Context, name string, limit int) ([]State, error)
	// Correlated returns the Waiting sagas of tenant (State.Tenant) that
	// wait for the event type named event with the correlation key: an
	// indexed lookup, in ctx's unit of work's transaction if it has one.
	// A saga of another tenant is never returned, whatever its key.
	Correlated(ctx context.Context, tenant, event, key string) ([]State, error)
	// Overdue returns at most limit of the Waiting sagas of name whose
	// deadline is before now, earliest first.
	Overdue(ctx context.Context, name string, now time.Time, limit int) ([]State, error)
}

// Reader reads what a Store keeps, for tools that inspect sagas rather
// than run them; Memory and SQL implement it. Its lists hold the sagas of
// every tenant in the store, each with its State.Tenant (SQL's: the store
// of ctx's transaction, when it has one, as a Tenancy's InTenant opens).
type Reader interface {
	// Load returns a saga's state.
	Load(ctx context.Context, id string) (State, error)
	// Unfinished returns the sagas of the definition name that are not in
	// a final status, the Waiting ones included.
	Unfinished(ctx context.Context, name string) ([]State, error)
	// ByKey returns the sagas of the definition name ("": of every
	// definition) whose business key (Saga.KeyBy) is key, the unfinished
	// ones first.
	ByKey(ctx context.Context, name, key string) ([]State, error)
	// Waiting returns at most limit of the Waiting sagas of the definition
	// name, the earliest deadline first: what each waits for (Awaiting,
	// Key) and until when (Deadline).
	Waiting(ctx context.Context, name string, limit int) ([]State, error)
	// Counts returns how many sagas there are of each name in each
	// status.
	Counts(ctx context.Context) ([]Count, error)
}

// Count is how many sagas of a name are in a status.
type Count struct {
	Name   string
	Status Status
	N      int
}
