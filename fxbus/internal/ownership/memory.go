package ownership

import (
	"context"
	"strings"
	"sync"
)

// Memory is a Store in memory, shared by the Coordinators given it: for
// tests, and for replicas of one process.
type Memory struct {
	mu      sync.Mutex
	entries map[string]Entry
	rev     uint64
	// Fail, when set, is returned by every call: a store that cannot be
	// reached.
	Fail error
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{entries: map[string]Entry{}} }

// List returns the entries whose name starts with prefix.
func (m *Memory) List(_ context.Context, prefix string) (map[string]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Fail != nil {
		return nil, m.Fail
	}
	out := map[string]Entry{}
	for k, e := range m.entries {
		if strings.HasPrefix(k, prefix) {
			out[k] = e
		}
	}
	return out, nil
}

// Put writes value under name if its revision is still rev.
func (m *Memory) Put(_ context.Context, name string, value []byte, rev uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Fail != nil {
		return 0, m.Fail
	}
	if m.entries[name].Rev != rev {
		return 0, ErrConflict
	}
	m.rev++
	m.entries[name] = Entry{Value: append([]byte(nil), value...), Rev: m.rev}
	return m.rev, nil
}
