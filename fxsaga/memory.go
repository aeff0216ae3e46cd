package fxsaga

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
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
	if st.holdsKey() {
		for _, other := range m.states {
			if other.Name == st.Name && other.Tenant == st.Tenant && other.BusinessKey == st.BusinessKey && other.holdsKey() {
				return &AlreadyStarted{Saga: st.Name, Key: st.BusinessKey, SagaID: other.ID}
			}
		}
	}
	if st.Created.IsZero() {
		st.Created = time.Now()
	}
	m.states[st.ID] = st
	return nil
}

// ByKey returns the sagas of name ("": every name) with business key
// key, the unfinished first, then by id.
func (m *Memory) ByKey(_ context.Context, name, key string) ([]State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []State
	for _, st := range m.states {
		if (name == "" || st.Name == name) && st.BusinessKey == key && key != "" {
			out = append(out, st)
		}
	}
	sortByKey(out)
	return out, nil
}

// sortByKey puts the unfinished sagas first, then orders by id.
func sortByKey(states []State) {
	slices.SortFunc(states, func(a, b State) int {
		if af, bf := a.Status.Final(), b.Status.Final(); af != bf {
			if bf {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// Save stores st if the stored version is st.Version-1.
func (m *Memory) Save(_ context.Context, st State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.states[st.ID]
	if old.Version != st.Version-1 {
		return ErrFenced
	}
	st.Created, st.Tenant = old.Created, old.Tenant // set when it was created, as the SQL store's
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

// Claim returns at most limit of the Running and Compensating sagas of
// name, by id. A Memory store has one process and is meant for one
// Runner, which skips the sagas it drives itself: there are no leases,
// and no other owner to fence.
func (m *Memory) Claim(_ context.Context, name string, limit int) ([]State, error) {
	return m.pick(limit, func(a, b State) int { return strings.Compare(a.ID, b.ID) }, func(st State) bool {
		return st.Name == name && (st.Status == Running || st.Status == Compensating)
	}), nil
}

// Correlated returns the sagas of tenant waiting for the event named
// event with key.
func (m *Memory) Correlated(_ context.Context, tenant, event, key string) ([]State, error) {
	return m.pick(0, func(a, b State) int { return strings.Compare(a.ID, b.ID) }, func(st State) bool {
		return st.Status == Waiting && st.Tenant == tenant && st.Awaiting == event && st.Key == key
	}), nil
}

// Overdue returns at most limit of the sagas of name waiting past their
// deadline at now, the earliest first.
func (m *Memory) Overdue(_ context.Context, name string, now time.Time, limit int) ([]State, error) {
	return m.pick(limit, byDeadline, func(st State) bool {
		return st.Name == name && st.Status == Waiting && st.Deadline.Before(now)
	}), nil
}

// Waiting returns at most limit of the waiting sagas of name, the
// earliest deadline first.
func (m *Memory) Waiting(_ context.Context, name string, limit int) ([]State, error) {
	return m.pick(limit, byDeadline, func(st State) bool { return st.Name == name && st.Status == Waiting }), nil
}

func byDeadline(a, b State) int {
	return cmp.Or(a.Deadline.Compare(b.Deadline), strings.Compare(a.ID, b.ID))
}

// pick returns the states keep keeps, ordered by order, at most limit
// of them (0: all).
func (m *Memory) pick(limit int, order func(a, b State) int, keep func(State) bool) []State {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []State
	for _, st := range m.states {
		if keep(st) {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, order)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
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

// Counts returns how many sagas of each name are in each status, by name
// and status.
func (m *Memory) Counts(context.Context) ([]Count, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := map[[2]string]int{}
	for _, st := range m.states {
		n[[2]string{st.Name, string(st.Status)}]++
	}
	out := make([]Count, 0, len(n))
	for k, v := range n {
		out = append(out, Count{Name: k[0], Status: Status(k[1]), N: v})
	}
	slices.SortFunc(out, func(a, b Count) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(string(a.Status), string(b.Status)))
	})
	return out, nil
}
