// Package lease takes, renews and gives back the outbox's leases: a row of
// the leases table per name (a topic's lane, the right to move due
// schedules, a relay's member lease), owned by one process until it
// expires, by the outbox's clock. The relay's lanes and the schedule
// promoter each hold theirs through a Holder of their own.
package lease

import (
	"context"
	"database/sql"
	"time"
)

// Statements are the leases table's statements, with the dialect's
// placeholders (the outbox's schema builds them).
type Statements struct {
	// Renew takes (owner, until, name, owner, now): it renews the lease
	// of the owner, or takes one that expired.
	Renew string
	// Take takes (name, owner, until): it inserts a lease nobody has, or
	// does nothing.
	Take string
	// Drop takes (name, owner); DropAll takes (owner).
	Drop, DropAll string
}

// Holder takes and renews leases for one owner. It remembers when it
// last renewed each, so that it asks the database at most once per
// quarter lease; it belongs to one goroutine.
type Holder struct {
	db      *sql.DB
	st      Statements
	owner   string
	length  time.Duration
	now     func() time.Time
	renewed map[string]time.Time // by now: when each lease held was last renewed, by name
}

// NewHolder returns the Holder of owner's leases of length, on the clock
// now.
func NewHolder(db *sql.DB, st Statements, owner string, length time.Duration, now func() time.Time) *Holder {
	return &Holder{db: db, st: st, owner: owner, length: length, now: now, renewed: map[string]time.Time{}}
}

// Owner is the owner the leases are taken for.
func (h *Holder) Owner() string { return h.owner }

// Take takes or renews the lease name, and reports whether this owner
// holds it. A lease renewed less than a quarter of its length ago is not
// renewed again: it still has three quarters to run, and the fenced
// delete checks it anyway.
func (h *Holder) Take(ctx context.Context, name string) (bool, error) {
	now := h.now()
	if at, ok := h.renewed[name]; ok && now.Sub(at) < h.length/4 {
		return true, nil
	}
	delete(h.renewed, name)
	until := now.UnixNano() + h.length.Nanoseconds()
	res, err := h.db.ExecContext(ctx, h.st.Renew, h.owner, until, name, h.owner, now.UnixNano())
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		if n == 1 {
			h.renewed[name] = now
		}
		return n == 1, err
	}
	res, err = h.db.ExecContext(ctx, h.st.Take, name, h.owner, until)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if n == 1 {
		h.renewed[name] = now
	}
	return n == 1, err
}

// Held reports whether this owner holds the lease name as far as it
// knows: renewed less than a lease's length ago.
func (h *Holder) Held(name string) bool {
	at, ok := h.renewed[name]
	return ok && h.now().Sub(at) < h.length
}

// Lost forgets the lease name: another owner has it, and the database is
// asked next time.
func (h *Holder) Lost(name string) { delete(h.renewed, name) }

// GiveBack drops the lease name, for another owner to take it.
func (h *Holder) GiveBack(ctx context.Context, name string) error {
	delete(h.renewed, name)
	_, err := h.db.ExecContext(ctx, h.st.Drop, name, h.owner)
	return err
}

// ReleaseAll drops every lease of the owner, the other Holders' of the
// same owner included: what it held goes to the others at once, not when
// it expires.
func (h *Holder) ReleaseAll(ctx context.Context) error {
	clear(h.renewed)
	_, err := h.db.ExecContext(ctx, h.st.DropAll, h.owner)
	return err
}
