package fxoutbox

import "time"

// TenantSourceReads returns how many times o has read its TenantStores'
// list, for tests: a relay's pass that read it after a change saw it.
func TenantSourceReads(o *Outbox) uint64 { return o.stores.reads.Load() }

// SetTenantMigrationTimeout sets how long the migration of a store that
// appears while o runs may take (tenantMigrationTimeout by default).
func SetTenantMigrationTimeout(o *Outbox, d time.Duration) {
	o.stores.mu.Lock()
	defer o.stores.mu.Unlock()
	o.stores.migrateFor = d
}

// BudgetTaken returns how many places of o's connection budget
// (Config.MaxConnections) are taken now.
func BudgetTaken(o *Outbox) int {
	if o.budget == nil {
		return 0
	}
	return len(o.budget.places)
}
