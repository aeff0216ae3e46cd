package fxbus

import (
	"context"
	"errors"
	"hash/fnv"
)

// Lanes across consumer replicas. An adapter that shares a topic's lanes
// among the replicas of a consuming group (natsjs with Config.Lanes) puts
// each key in a lane by LaneOf, lets one replica at a time own a lane
// under a lease, and says so in each message's context: the lane, the
// epoch of its lease (raised at each takeover) and whether the lease is
// still held. The bus reads the parked keys again when a lane changes
// hands, and the inbox (fxoutbox) checks the lease before it commits a
// handler's effects: a replica that stalled past its lease cannot commit
// beside the lane's new owner.

// LaneOf is the lane among lanes that a key's messages go in: FNV-1a (32
// bits) of the key's bytes, modulo lanes; 0 without a key or with one
// lane. It is the outbox's hash (fxoutbox.LaneOf): with one figure of
// lanes for a topic, a relay's lane is a consumer's.
func LaneOf(key string, lanes int) int {
	if key == "" || lanes <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(lanes))
}

// ErrFenced is what Fenced returns when a message's lane is no longer
// this replica's: its lease ran out (a stall, a partition) and another
// replica may own the lane. The bus gives such a message back for
// redelivery, without retries or a dead letter.
var ErrFenced = errors.New("fxbus: the message's lane is no longer this replica's (its lease ran out): its effects must not commit")

// LaneLease is what an adapter that shares lanes among replicas says of
// the lane a message came from.
type LaneLease struct {
	// Lane is the message's lane.
	Lane int
	// Epoch is the lane's lease's: raised each time a replica takes the
	// lane.
	Epoch uint64
	// Held reports whether this replica still holds the lane's lease, by
	// its clock (with a margin before the lease ends).
	Held func() bool
}

type laneLeaseKey struct{}

// WithLaneLease returns ctx carrying l: for adapters, on each message's
// context.
func WithLaneLease(ctx context.Context, l LaneLease) context.Context {
	return context.WithValue(ctx, laneLeaseKey{}, l)
}

// LaneLeaseOf returns the lane lease ctx carries, if any.
func LaneLeaseOf(ctx context.Context) (LaneLease, bool) {
	l, ok := ctx.Value(laneLeaseKey{}).(LaneLease)
	return l, ok
}

// Fenced returns ErrFenced when ctx is a message's whose lane lease is
// no longer held, and nil otherwise (no lane lease included): what a
// store checks right before it commits a handler's effects.
func Fenced(ctx context.Context) error {
	if l, ok := LaneLeaseOf(ctx); ok && l.Held != nil && !l.Held() {
		return ErrFenced
	}
	return nil
}

// ErrLeaseConflict is what a LeaseStore's Put returns when the entry
// changed since the revision the write was based on: another replica
// wrote first.
var ErrLeaseConflict = errors.New("fxbus: the lease changed since the revision the write was based on")

// LeaseEntry is an entry of a LeaseStore: its value and its revision (0:
// none).
type LeaseEntry struct {
	Value []byte
	Rev   uint64
}

// LeaseStore keeps the lanes' leases of the replicas of a consuming group
// when the broker keeps none of its own (amqpbus.Config.Leases; NATS and
// Redis keep theirs in the broker): entries by name, written by
// compare-and-set. fxoutbox.LaneLeaseStore is one on the outbox's
// database. Names are at most 255 bytes.
type LeaseStore interface {
	// List returns every entry whose name starts with prefix, by name.
	List(ctx context.Context, prefix string) (map[string]LeaseEntry, error)
	// Put writes value under name if its revision is still rev (0: if
	// there is none), and returns the new revision, above rev; it returns
	// ErrLeaseConflict when the revision changed.
	Put(ctx context.Context, name string, value []byte, rev uint64) (uint64, error)
}
