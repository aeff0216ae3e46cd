// Package ownership shares a topic's lanes among the replicas of a
// consuming group: which replica owns which lane, under leases on a
// shared store (a broker's key-value store, or the fxbus.LeaseStore given
// for a broker that keeps none), with an injectable clock.
//
// Each replica is a member: it keeps a member lease of its own alive, and
// every round it computes, from the live members alone, which lanes it
// should own (Assign: balanced, and stable under a join or a leave for
// most lanes). It takes a lane it should own only when the lane's lease is
// free (given back by its previous owner, who drained it first) or expired
// (its owner died or stalled past it); it renews the lanes it holds; a lane
// it should no longer own it gives up: the caller drains it, then Release
// gives the lease back. So a lane is never held by two members at once,
// as long as their clocks agree within Margin.
//
// A lane's lease carries an epoch, raised at each take: the taker's
// proof, in fences and logs, that it took over from whoever held it before.
//
// A Driver runs that loop for a broker's lane set (natsjs, redisbus,
// amqpbus): each broker brings only how it consumes one lane (a Lane).
package ownership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
)

// ErrConflict is what a Store returns when the entry changed since the
// revision the write was based on: another member wrote first. It is
// fxbus.ErrLeaseConflict, what a store of a user's returns.
var ErrConflict = fxbus.ErrLeaseConflict

// Entry is a lease as a Store keeps it: its value and its revision (0:
// none).
type Entry = fxbus.LeaseEntry

// Store keeps the leases of one group on one topic, by name, with
// compare-and-set writes (fxbus.LeaseStore, which a user gives for a
// broker that keeps no leases). Names are made of letters, digits, '.',
// '-' and '_'.
type Store = fxbus.LeaseStore

// Lease is a lease's value: who holds it until when, and the epoch of the
// lane's takes.
type Lease struct {
	Owner string `json:"owner"`
	Until int64  `json:"until"` // Unix nanoseconds, by the owner's clock
	Epoch uint64 `json:"epoch"`
}

// Config configures a Coordinator.
type Config struct {
	// Member names this replica; unique in the group.
	Member string
	// Lanes is the number of lanes.
	Lanes int
	// Lease is how long a lease lasts after its renewal. A member that
	// died leaves its lanes to the others this long after its last
	// renewal, at most.
	Lease time.Duration
	// Margin is how long before its lease ends a member stops taking its
	// lane for held, to allow for clocks that disagree and for the time
	// a renewal takes. Default Lease/4.
	Margin time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Coordinator is one member's view of the lanes: Step renews, takes and
// says what to give up. It belongs to one goroutine, but Held is safe
// from any.
type Coordinator struct {
	cfg   Config
	store Store
	held  map[int]*heldLane
	// valid is, by lane, the time until which a held lane counts as held:
	// read by Held from the handlers' goroutines.
	valid *validity
}

type heldLane struct {
	rev    uint64
	epoch  uint64
	giving bool
}

// Plan is what a Step asks of its caller.
type Plan struct {
	// Taken are the lanes this member now holds and did not before, with
	// their epochs: start consuming them.
	Taken map[int]uint64
	// Give are lanes held that another member should own: drain them,
	// then Release each.
	Give []int
	// Lost are lanes that were held and are not any more (the lease was
	// taken after this member failed to renew it in time): stop
	// consuming them at once; their effects are fenced already.
	Lost []int
	// Members is how many members are alive.
	Members int
}

// New returns the Coordinator of cfg's member on store.
func New(store Store, cfg Config) (*Coordinator, error) {
	switch {
	case cfg.Member == "" || strings.ContainsAny(cfg.Member, ". *>"):
		return nil, fmt.Errorf("ownership: member %q: it must be non-empty, without dot, space or wildcard", cfg.Member)
	case cfg.Lanes < 1:
		return nil, fmt.Errorf("ownership: lanes must be at least 1: got %d", cfg.Lanes)
	case cfg.Lease <= 0:
		return nil, fmt.Errorf("ownership: the lease must be positive: got %v", cfg.Lease)
	}
	if cfg.Margin <= 0 || cfg.Margin >= cfg.Lease {
		cfg.Margin = cfg.Lease / 4
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Coordinator{cfg: cfg, store: store, held: map[int]*heldLane{}, valid: newValidity()}, nil
}

// MemberOr is name, or a random name when name is "": a replica that
// was given none is a member of its own until it stops.
func MemberOr(name string) string {
	if name == "" {
		return strconv.FormatUint(rand.Uint64(), 36)
	}
	return name
}

// Member is this member's name.
func (c *Coordinator) Member() string { return c.cfg.Member }

func memberName(m string) string { return "member." + m }
func laneName(n int) string      { return "lane." + strconv.Itoa(n) }

// Step is one round: it renews this member's lease and its lanes', reads
// who is alive, takes the free or expired lanes this member should own,
// and says which lanes it holds and should give up. A store that cannot
// be reached fails the step; the leases run out meanwhile (Held says so).
func (c *Coordinator) Step(ctx context.Context) (Plan, error) {
	now := c.cfg.Now()
	until := now.Add(c.cfg.Lease).UnixNano()
	plan := Plan{Taken: map[int]uint64{}}
	entries, err := c.store.List(ctx, "")
	if err != nil {
		return plan, fmt.Errorf("ownership: read the leases: %w", err)
	}
	// This member's own lease: what tells the others it is alive.
	me := memberName(c.cfg.Member)
	mine, _ := json.Marshal(Lease{Owner: c.cfg.Member, Until: until})
	if _, err := c.store.Put(ctx, me, mine, entries[me].Rev); err != nil {
		return plan, fmt.Errorf("ownership: renew member %s: %w", c.cfg.Member, err)
	}
	var members []string
	for name, e := range entries {
		m, ok := strings.CutPrefix(name, "member.")
		if !ok {
			continue
		}
		var l Lease
		if json.Unmarshal(e.Value, &l) == nil && (m == c.cfg.Member || l.Until > now.UnixNano()) {
			members = append(members, m)
		}
	}
	if !slices.Contains(members, c.cfg.Member) {
		members = append(members, c.cfg.Member)
	}
	plan.Members = len(members)
	want := Assign(members, c.cfg.Lanes)
	for n := range c.cfg.Lanes {
		name := laneName(n)
		e := entries[name]
		var l Lease
		if e.Rev != 0 {
			_ = json.Unmarshal(e.Value, &l)
		}
		h := c.held[n]
		switch {
		case h != nil && (e.Rev != h.rev || l.Owner != c.cfg.Member):
			// Taken from under this member: it failed to renew in time.
			delete(c.held, n)
			c.valid.set(n, time.Time{})
			plan.Lost = append(plan.Lost, n)
		case h != nil:
			v, _ := json.Marshal(Lease{Owner: c.cfg.Member, Until: until, Epoch: h.epoch})
			rev, err := c.store.Put(ctx, name, v, h.rev)
			if err != nil {
				if errors.Is(err, ErrConflict) {
					delete(c.held, n)
					c.valid.set(n, time.Time{})
					plan.Lost = append(plan.Lost, n)
					continue
				}
				return plan, fmt.Errorf("ownership: renew lane %d: %w", n, err)
			}
			h.rev = rev
			c.valid.set(n, now.Add(c.cfg.Lease-c.cfg.Margin))
			if want[n] != c.cfg.Member && !h.giving {
				h.giving = true
			}
			if h.giving {
				plan.Give = append(plan.Give, n)
			}
		case want[n] == c.cfg.Member && (l.Owner == "" || l.Until <= now.UnixNano()):
			v, _ := json.Marshal(Lease{Owner: c.cfg.Member, Until: until, Epoch: l.Epoch + 1})
			rev, err := c.store.Put(ctx, name, v, e.Rev)
			if errors.Is(err, ErrConflict) {
				continue // another member took it first: next round
			}
			if err != nil {
				return plan, fmt.Errorf("ownership: take lane %d: %w", n, err)
			}
			c.held[n] = &heldLane{rev: rev, epoch: l.Epoch + 1}
			c.valid.set(n, now.Add(c.cfg.Lease-c.cfg.Margin))
			plan.Taken[n] = l.Epoch + 1
		}
	}
	return plan, nil
}

// Release gives lane n's lease back, once the caller drained it: the
// member that should own it takes it at its next step. The epoch stays.
func (c *Coordinator) Release(ctx context.Context, n int) error {
	h := c.held[n]
	if h == nil {
		return nil
	}
	delete(c.held, n)
	c.valid.set(n, time.Time{})
	v, _ := json.Marshal(Lease{Epoch: h.epoch})
	if _, err := c.store.Put(ctx, laneName(n), v, h.rev); err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("ownership: give back lane %d: %w", n, err)
	}
	return nil
}

// Leave gives back every lane (each must be drained) and this member's
// lease: the others take its lanes at their next step, not after the
// lease.
func (c *Coordinator) Leave(ctx context.Context) error {
	var errs []error
	for n := range c.held {
		errs = append(errs, c.Release(ctx, n))
	}
	entries, err := c.store.List(ctx, memberName(c.cfg.Member))
	if err == nil {
		if e, ok := entries[memberName(c.cfg.Member)]; ok {
			v, _ := json.Marshal(Lease{Owner: c.cfg.Member})
			_, err = c.store.Put(ctx, memberName(c.cfg.Member), v, e.Rev)
		}
	}
	if err != nil && !errors.Is(err, ErrConflict) {
		errs = append(errs, fmt.Errorf("ownership: leave: %w", err))
	}
	return errors.Join(errs...)
}

// Held reports whether this member holds lane n by its clock: its lease
// was renewed less than Lease-Margin ago. A handler's effects on lane n
// are fenced by it: false, and they must not commit. Safe from any
// goroutine.
func (c *Coordinator) Held(n int) bool {
	return c.cfg.Now().Before(c.valid.get(n))
}

// Assign says which member should own each lane: every member owns
// Lanes/len(members) lanes or one more, and each lane goes to the member
// its rendezvous hash prefers among those with room, so that a join or a
// leave moves few lanes besides those it must.
func Assign(members []string, lanes int) []string {
	out := make([]string, lanes)
	if len(members) == 0 {
		return out
	}
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	quota := map[string]int{}
	for i, m := range ms {
		quota[m] = lanes / len(ms)
		if i < lanes%len(ms) {
			quota[m]++
		}
	}
	for n := range lanes {
		best, bestScore := "", uint64(0)
		for _, m := range ms {
			if quota[m] == 0 {
				continue
			}
			if s := score(m, n); best == "" || s > bestScore {
				best, bestScore = m, s
			}
		}
		out[n] = best
		quota[best]--
	}
	return out
}

func score(member string, lane int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(strconv.Itoa(lane)))
	return h.Sum64()
}
