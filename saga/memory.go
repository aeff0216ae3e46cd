package fxsaga

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Memory is a Store in memory, for tests.
type Memory struct {
	mu     sync.Mutex
	states map[string]State
	log    []Entry
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{states: map[string]State{}} }

// Create stores a new saga.
func (m *Memory) Create(_ context.Context, st State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.states[st.ID]; ok {
		return fmt.Errorf("fxsaga: saga %s exists", st.ID)
	}
	m.states[st.ID] = st
	return nil
}

// Save stores st if the stored version is st.Version-1.
func (m *Memory) Save(_ context.Context, st State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.states[st.ID].Version != st.Version-1 {
		return ErrFenced
	}
	m.states[st.ID] = st
	return nil
}

// Load returns a saga's state.
func (m *Memory) Load(_ context.Context, id string) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.states[id]
	if !ok {
		return State{}, fmt.Errorf("fxsaga: no saga %s", id)
	}
	return st, nil
}

// Unfinished returns the sagas of name that are not final, by id.
func (m *Memory) Unfinished(_ context.Context, name string) ([]State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []State
	for _, st := range m.states {
		if st.Name == name && !st.Status.Final() {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Claim returns the unfinished sagas of name. A Memory store has one
// process and is meant for one Runner, which skips the sagas it drives
// itself: there are no leases, and no other owner to fence.
func (m *Memory) Claim(ctx context.Context, name string) ([]State, error) {
	return m.Unfinished(ctx, name)
}

// Log appends an entry.
func (m *Memory) Log(_ context.Context, e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, e)
	return nil
}

// Entries returns the log of saga id, in order.
func (m *Memory) Entries(id string) []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Entry
	for _, e := range m.log {
		if e.SagaID == id {
			out = append(out, e)
		}
	}
	return out
}

// Failed lists the sagas that need a person: left Failed (a compensation
// kept failing) or SetAside (their state did not fit their definition).
func (m *Memory) Failed() []State {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []State
	for _, st := range m.states {
		if st.Status == Failed || st.Status == SetAside {
			out = append(out, st)
		}
	}
	return out
}
