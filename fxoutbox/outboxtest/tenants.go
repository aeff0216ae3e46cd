package outboxtest

import (
	"context"
	"slices"
	"sync"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// TenantSource is an fxoutbox.TenantStores whose list a test changes
// while the outbox runs (Set): a tenant added, removed or returning, as
// the outbox reads its source again once per poll interval. It resolves
// the ids of the stores listed now, byte for byte, and nothing else.
// Its zero value lists no store.
type TenantSource struct {
	mu     sync.Mutex
	stores []fxoutbox.TenantStore
}

// NewTenantSource returns a TenantSource listing stores.
func NewTenantSource(stores ...fxoutbox.TenantStore) *TenantSource {
	s := &TenantSource{}
	s.Set(stores...)
	return s
}

// Resolve returns id when a store listed now has it, else an error that
// wraps fxbus.ErrUnknownTenant.
func (s *TenantSource) Resolve(_ context.Context, id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.stores {
		if st.ID == id {
			return id, nil
		}
	}
	return "", fxbus.ErrUnknownTenant
}

// Stores returns the stores listed now.
func (s *TenantSource) Stores(context.Context) ([]fxoutbox.TenantStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.stores), nil
}

// Set makes stores the list, in place of the last.
func (s *TenantSource) Set(stores ...fxoutbox.TenantStore) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stores = slices.Clone(stores)
}

var _ fxoutbox.TenantStores = (*TenantSource)(nil)
