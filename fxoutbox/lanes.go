package fxoutbox

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"go.uber.org/zap"
)

// Order per key. A row whose message has a key (fxbus.KeyBy puts it in
// the fxbus.MetadataKey metadata) goes in one of its topic's lanes, by a
// stable hash of the key; a row without a key goes in lane 0, so that a
// topic nobody keys keeps its one order. The relay sends each lane in id
// order under a lease of its own: the rows of one key keep their order,
// while the lanes of one topic are shared by the relays of every replica.

// lane is one lane of a topic: what a relay leases and sends in order.
type lane struct {
	topic string
	n     int
}

// lease is the leases table's name for the lane: the topic itself for
// lane 0 (a topic's only lane when nothing keys it, as before lanes
// existed), else the topic, "#" and the lane.
func (l lane) lease() string {
	if l.n == 0 {
		return l.topic
	}
	return l.topic + "#" + strconv.Itoa(l.n)
}

// laneOf is the lane of a row with key among lanes: FNV-1a (32 bits) of
// the key's bytes, modulo lanes; 0 without a key or with one lane. The
// hash is part of the schema: it never changes, so that a key's rows
// written by different versions share their lane.
func laneOf(key string, lanes int) int {
	if key == "" || lanes <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(lanes))
}

// LaneOf returns the lane among lanes that the rows of key go in: for
// tests and tools that check how keys spread.
func LaneOf(key string, lanes int) int { return laneOf(key, lanes) }

// lanesOf is how many lanes topic's keyed rows are spread over.
func (c RelayConfig) lanesOf(topic string) int {
	if n, ok := c.TopicLanes[topic]; ok && n > 0 {
		return n
	}
	if c.Lanes > 0 {
		return c.Lanes
	}
	return 1
}

func (c RelayConfig) validateLanes() error {
	if c.Lanes < 0 {
		return fmt.Errorf("fxoutbox: Relay.Lanes must not be negative: got %d", c.Lanes)
	}
	for topic, n := range c.TopicLanes {
		if n < 1 {
			return fmt.Errorf("fxoutbox: Relay.TopicLanes[%q] must be at least 1: got %d", topic, n)
		}
	}
	return nil
}

// memberPrefix names the leases that say which relays are alive: each
// relay renews its own as it renews its lanes' (see share).
const memberPrefix = "fxcqrs:relay:"

// members is how many relays are alive: those whose member lease has not
// expired, this one included. It asks the database at most once per
// quarter lease, and renews this relay's own lease first.
func (r *relay) members(ctx context.Context) (int, error) {
	now := r.now()
	if r.live > 0 && now.Sub(r.liveAt) < r.cfg.Lease/4 && !now.Before(r.liveAt) {
		return r.live, nil
	}
	if _, err := r.lease(ctx, memberPrefix+r.owner); err != nil {
		return 0, err
	}
	var n int
	if err := r.db.QueryRowContext(ctx, r.q.Members, memberPrefix+"%", now.UnixNano()).Scan(&n); err != nil {
		return 0, err
	}
	r.live, r.liveAt = max(n, 1), now
	return r.live, nil
}

// held is the lanes of topic this relay holds a lease on that has not
// run out, in order.
func (r *relay) held(topic string, lanes []int) []int {
	now := r.now()
	var out []int
	for _, n := range lanes {
		if at, ok := r.renewed[lane{topic, n}.lease()]; ok && now.Sub(at) < r.cfg.Lease {
			out = append(out, n)
		}
	}
	return out
}

// share is how many of a topic's lanes one relay sends while others are
// alive: its fair part, rounded up, so that every lane has a relay.
func share(lanes, members int) int { return (lanes + members - 1) / max(members, 1) }

// sendTopic sends topic's lanes, those this relay holds and, up to its
// share, those nobody holds; then gives back the lanes it holds beyond
// its share, between batches, for another relay to take.
func (r *relay) sendTopic(ctx context.Context, topic string, lanes []int) (int, error) {
	// The topic's lanes are its configured number, and any beyond that
	// still holding rows (the number was lowered): the lanes of this pass
	// may be only those a commit just wrote to.
	all := slices.Clone(lanes)
	for n := range r.cfg.lanesOf(topic) {
		if !slices.Contains(all, n) {
			all = append(all, n)
		}
	}
	slices.Sort(all)
	fair := len(all)
	if fair > 1 {
		live, err := r.members(ctx)
		if err != nil {
			return 0, err
		}
		fair = share(fair, live)
	}
	held := r.held(topic, all)
	sent := 0
	var errs []error
	for _, n := range lanes {
		if !slices.Contains(held, n) && len(held) >= fair {
			continue // another relay's part
		}
		select {
		case <-r.stop:
			return sent, nil
		default:
		}
		got, ok, err := r.drain(ctx, lane{topic, n})
		sent += got
		if ok && !slices.Contains(held, n) {
			held = append(held, n)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	slices.Sort(held)
	for len(held) > fair { // give back the last ones
		n := held[len(held)-1]
		held = held[:len(held)-1]
		if err := r.giveBack(ctx, lane{topic, n}); err != nil {
			errs = append(errs, err)
		}
	}
	return sent, errors.Join(errs...)
}

// giveBack drops this relay's lease on l, for another relay to take it.
func (r *relay) giveBack(ctx context.Context, l lane) error {
	delete(r.renewed, l.lease())
	_, err := r.db.ExecContext(ctx, r.q.DropLease, l.lease(), r.owner)
	return err
}

// laneNumbers returns the lanes of topic that hold rows: a loose index
// scan, one lookup per lane.
func (r *relay) laneNumbers(ctx context.Context, topic string) ([]int, error) {
	rows, err := r.db.QueryContext(ctx, r.q.Lanes, topic, topic)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var n int
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// lease takes or renews this relay's lease named topic (a lane's, the
// schedules', or the relay's own member lease).
// A lease renewed less than a quarter of its length ago is not renewed
// again: it still has three quarters to run, and the fenced delete checks
// it anyway.
func (r *relay) lease(ctx context.Context, topic string) (bool, error) {
	now := r.now()
	if at, ok := r.renewed[topic]; ok && now.Sub(at) < r.cfg.Lease/4 {
		return true, nil
	}
	delete(r.renewed, topic)
	until := now.UnixNano() + r.cfg.Lease.Nanoseconds()
	res, err := r.db.ExecContext(ctx, r.q.RenewLease, r.owner, until, topic, r.owner, now.UnixNano())
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		if n == 1 {
			r.renewed[topic] = now
		}
		return n == 1, err
	}
	res, err = r.db.ExecContext(ctx, r.q.TakeLease, topic, r.owner, until)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if n == 1 {
		r.renewed[topic] = now
	}
	return n == 1, err
}

// releaseLeases drops every lease this relay holds, as it stops: its
// lanes go to the others at once, not when they expire.
func (r *relay) releaseLeases() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.db.ExecContext(ctx, r.q.DropLeases, r.owner); err != nil {
		r.log.Warn("relay: leases not released; they expire", zap.Error(err))
	}
}

// laneOf is the lane of topic that msg's row goes in: by its key, if it
// has one.
func (u *unitOfWork) laneOf(topic string, msg *message.Message) int {
	key := msg.Metadata.Get(fxbus.MetadataKey)
	if key == "" || u.lanes == nil {
		return 0
	}
	return laneOf(key, u.lanes(topic))
}
