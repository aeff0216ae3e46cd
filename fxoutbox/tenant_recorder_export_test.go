package fxoutbox

import (
	"database/sql"
	"slices"

	"github.com/fxcqrs/fxcqrs/fxbus"
)

// NewDeadLetterRecorder is the bus's recorder and parking that Module
// provides, for tests that drive it without a bus.
func NewDeadLetterRecorder(db *sql.DB, cfg Config, src TenantStores) (fxbus.DeadLetterRecorder, error) {
	return newDeadLetterRecorder(db, cfg, src, nil)
}

// NewDeadLetterRecorderLogged is NewDeadLetterRecorder logging to log.
var NewDeadLetterRecorderLogged = newDeadLetterRecorder

// AdmitsHeld is how many released messages rec holds between their Admit
// and their Arrived or Repark.
func AdmitsHeld(rec fxbus.DeadLetterRecorder) int {
	r := rec.(*tenantRecorder)
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.admits)
}

// SetMaxAdmits bounds how many released messages rec holds.
func SetMaxAdmits(rec fxbus.DeadLetterRecorder, n int) {
	r := rec.(*tenantRecorder)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxAdmits = n
}

// StoresHeld is the tenants whose stores' Admins rec keeps.
func StoresHeld(rec fxbus.DeadLetterRecorder) []string {
	r := rec.(*tenantRecorder)
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.admins))
	for id := range r.admins {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
