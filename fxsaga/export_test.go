package fxsaga

import (
	"time"

	"github.com/fxcqrs/fxcqrs"
)

// Driving is how many sagas r drives now.
func Driving(r *Runner) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.driving)
}

// RecoveryCheck is the module's recovery check on a clock, with the
// state it reads.
func RecoveryCheck(now func() time.Time, interval time.Duration) RecoveryProbe {
	rc := &recovery{now: now, interval: interval}
	return RecoveryProbe{Check: rc.check(), rc: rc}
}

// RecoveryProbe is a recovery check and its state.
type RecoveryProbe struct {
	fxcqrs.Check
	rc *recovery
}

// RecoveryBegan and RecoveryPassed are what the loop records.
func RecoveryBegan(p RecoveryProbe)  { p.rc.began() }
func RecoveryPassed(p RecoveryProbe) { p.rc.pass() }

// SetClock sets the store's clock, which dates a saga's creation.
func SetClock(s *SQL, now func() time.Time) { s.now = now }

// TenancyOf is where r's sagas live per tenant (RunnerConfig.Tenancy).
func TenancyOf(r *Runner) Tenancy { return r.tenancy }
