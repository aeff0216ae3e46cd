package ownership_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clock is a clock the test moves.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_700_000_000, 0)} }
func member(t *testing.T, s ownership.Store, c *clock, name string) *ownership.Coordinator {
	t.Helper()
	co, err := ownership.New(s, ownership.Config{Member: name, Lanes: 8, Lease: 3 * time.Second, Now: c.now})
	require.NoError(t, err)
	return co
}

// group runs members' steps the way a replica does: it drains what it
// gives (at once here) and releases it, and keeps who consumes what.
type group struct {
	t       *testing.T
	members map[string]*ownership.Coordinator
	owns    map[string]map[int]bool // by member: the lanes it consumes
}

func newGroup(t *testing.T) *group {
	return &group{t: t, members: map[string]*ownership.Coordinator{}, owns: map[string]map[int]bool{}}
}

func (g *group) add(name string, co *ownership.Coordinator) {
	g.members[name] = co
	g.owns[name] = map[int]bool{}
}

func (g *group) step(names ...string) {
	g.t.Helper()
	for _, name := range names {
		co := g.members[name]
		plan, err := co.Step(context.Background())
		require.NoError(g.t, err)
		for n := range plan.Taken {
			g.owns[name][n] = true
		}
		for _, n := range plan.Lost {
			delete(g.owns[name], n)
		}
		for _, n := range plan.Give {
			delete(g.owns[name], n)
			require.NoError(g.t, co.Release(context.Background(), n))
		}
		g.once()
	}
}

// once checks that no lane is consumed, or held, by two members.
func (g *group) once() {
	g.t.Helper()
	for n := range 8 {
		var by []string
		for name, co := range g.members {
			if co.Held(n) {
				by = append(by, name)
			}
		}
		require.LessOrEqual(g.t, len(by), 1, "lane %d held by %v", n, by)
		var consumers []string
		for name, lanes := range g.owns {
			if lanes[n] {
				consumers = append(consumers, name)
			}
		}
		require.LessOrEqual(g.t, len(consumers), 1, "lane %d consumed by %v", n, consumers)
	}
}

func (g *group) counts(names ...string) []int {
	var out []int
	for _, n := range names {
		out = append(out, len(g.owns[n]))
	}
	return out
}

// Three members share eight lanes 3/3/2; a fourth that joins gets its
// share only as the others give theirs back; no lane is ever consumed by
// two at once.
func TestLanesSpreadAndMoveOnJoin(t *testing.T) {
	t.Parallel()
	s, c := ownership.NewMemory(), newClock()
	g := newGroup(t)
	for _, m := range []string{"a", "b", "c"} {
		g.add(m, member(t, s, c, m))
	}
	g.step("a", "b", "c")
	g.step("a", "b", "c") // those a took before b and c were seen are given back, then taken
	g.step("a", "b", "c")
	assert.ElementsMatch(t, []int{3, 3, 2}, g.counts("a", "b", "c"))

	g.add("d", member(t, s, c, "d"))
	g.step("d", "a", "b", "c", "d")
	g.step("a", "b", "c", "d")
	assert.ElementsMatch(t, []int{2, 2, 2, 2}, g.counts("a", "b", "c", "d"))
}

// A member that dies keeps its lanes until its lease ends: the others
// take them at their first step after, not before; the dead one's lanes
// count as held by it only until Lease-Margin, so its late effects are
// fenced before anyone takes over.
func TestADeadMembersLanesAreTakenAfterItsLease(t *testing.T) {
	t.Parallel()
	s, c := ownership.NewMemory(), newClock()
	g := newGroup(t)
	for _, m := range []string{"a", "b", "c"} {
		g.add(m, member(t, s, c, m))
	}
	for range 3 {
		g.step("a", "b", "c")
	}
	dead := g.owns["c"]
	require.NotEmpty(t, dead)
	for range 4 { // 2s: c is silent, its lease (3s) runs
		c.add(500 * time.Millisecond)
		g.step("a", "b")
		for n := range dead {
			assert.False(t, g.owns["a"][n] || g.owns["b"][n], "lane %d taken before c's lease ended", n)
		}
	}
	var some int
	for n := range dead {
		some = n
	}
	assert.True(t, g.members["c"].Held(some), "c holds its lane until Lease-Margin")
	c.add(500 * time.Millisecond) // 2.5s
	assert.False(t, g.members["c"].Held(some), "fenced: past Lease-Margin")
	g.owns["c"] = map[int]bool{}  // its effects are fenced: it consumes nothing that counts
	c.add(600 * time.Millisecond) // 3.1s: the lease ended
	g.step("a", "b")
	g.step("a", "b")
	assert.Equal(t, 8, len(g.owns["a"])+len(g.owns["b"]))

	// c comes back (it only stalled): it learns that it lost its lanes.
	plan, err := g.members["c"].Step(context.Background())
	require.NoError(t, err)
	assert.Len(t, plan.Lost, len(dead))
	assert.Empty(t, plan.Taken, "its share is held by the others until they give it")
}

// A member that leaves gives its lanes back at once: the others take them
// at their next step, not after the lease.
func TestALeavingMembersLanesAreTakenAtOnce(t *testing.T) {
	t.Parallel()
	s, c := ownership.NewMemory(), newClock()
	g := newGroup(t)
	for _, m := range []string{"a", "b"} {
		g.add(m, member(t, s, c, m))
	}
	for range 3 {
		g.step("a", "b")
	}
	require.NoError(t, g.members["b"].Leave(context.Background()))
	delete(g.members, "b")
	delete(g.owns, "b")
	g.step("a")
	assert.Len(t, g.owns["a"], 8)
}

// A store that cannot be reached fails the step; the lanes held count as
// held until Lease-Margin, then not.
func TestAnUnreachableStore(t *testing.T) {
	t.Parallel()
	s, c := ownership.NewMemory(), newClock()
	co := member(t, s, c, "a")
	_, err := co.Step(context.Background())
	require.NoError(t, err)
	require.True(t, co.Held(0))
	s.Fail = errors.New("down")
	c.add(time.Second)
	_, err = co.Step(context.Background())
	require.ErrorIs(t, err, s.Fail)
	assert.True(t, co.Held(0))
	c.add(1500 * time.Millisecond)
	assert.False(t, co.Held(0))
}

// Assign is balanced and moves few lanes when a member joins.
func TestAssign(t *testing.T) {
	t.Parallel()
	three := ownership.Assign([]string{"c", "a", "b"}, 8)
	count := map[string]int{}
	for _, m := range three {
		count[m]++
	}
	assert.ElementsMatch(t, []int{3, 3, 2}, []int{count["a"], count["b"], count["c"]})
	four := ownership.Assign([]string{"a", "b", "c", "d"}, 8)
	moved := 0
	for n := range 8 {
		if three[n] != four[n] {
			moved++
		}
	}
	assert.LessOrEqual(t, moved, 4, fmt.Sprint(three, four))
	assert.Equal(t, make([]string, 3), ownership.Assign(nil, 3))
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []ownership.Config{
		{Member: "", Lanes: 1, Lease: time.Second},
		{Member: "a.b", Lanes: 1, Lease: time.Second},
		{Member: "a", Lanes: 0, Lease: time.Second},
		{Member: "a", Lanes: 1},
	} {
		_, err := ownership.New(ownership.NewMemory(), cfg)
		assert.Error(t, err, "%+v", cfg)
	}
}
