package relay

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// What a pass sends and which relay sends it: the topics and their lanes,
// each lane under a lease, shared fairly among the relays alive (see
// schema.Lane for how a key finds its lane).

// passLanes is what a pass sends, topic by topic in order, each topic's
// lanes in order: the lanes the table holds, found at least once per poll
// interval (and after a pass that left work behind), else just those this
// process's commits announced since the last pass, which spares the busy
// relay a statement per pass.
func (r *Relay) passLanes(ctx context.Context) ([]string, map[string][]int, error) {
	r.hintMu.Lock()
	lanes := map[string][]int{}
	for l := range r.hinted {
		lanes[l.Topic] = append(lanes[l.Topic], l.N)
	}
	clear(r.hinted)
	r.hintMu.Unlock()
	if r.discover.Swap(false) {
		r.discoveredAt = time.Time{} // the moved rows' topics: from the table
	}
	now := r.now()
	if r.discoveredAt.IsZero() || now.Sub(r.discoveredAt) >= r.cfg.PollInterval || now.Before(r.discoveredAt) {
		found, err := r.topics(ctx)
		if err != nil {
			return nil, nil, err
		}
		for _, topic := range found {
			ns, err := r.laneNumbers(ctx, topic)
			if err != nil {
				return nil, nil, err
			}
			lanes[topic] = append(lanes[topic], ns...)
		}
		r.discoveredAt = now
	}
	topics := make([]string, 0, len(lanes))
	for topic, ns := range lanes {
		topics = append(topics, topic)
		slices.Sort(ns)
		lanes[topic] = slices.Compact(ns)
	}
	sort.Strings(topics)
	return topics, lanes, nil
}

// batchesPerTurn is how many full batches of one lane a pass sends
// before it turns to the next lane: a hot lane does not wait for a new
// pass per batch, nor hold the others back for long.
const batchesPerTurn = 16

// drain sends l's batches while this relay holds its lease, up to
// batchesPerTurn of them; held says whether it held the lease.
func (r *Relay) drain(ctx context.Context, l schema.Lane) (sent int, held bool, err error) {
	for range batchesPerTurn {
		ok, err := r.leases.Take(ctx, l.Lease())
		if err != nil || !ok {
			if err == nil {
				r.sender.forget(l) // its rows sent and not deleted are the new owner's
			}
			return sent, held, err // !ok: another relay sends this lane
		}
		held = true
		n, err := r.sender.send(ctx, l)
		sent += n
		if err != nil || n < r.cfg.BatchSize {
			return sent, held, err
		}
		select {
		case <-r.stop:
			return sent, held, nil
		default:
		}
	}
	return sent, held, nil
}

func (r *Relay) topics(ctx context.Context) ([]string, error) {
	rows, err := r.db.QueryContext(ctx, r.q.Topics)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var topics []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		topics = append(topics, t)
	}
	sort.Strings(topics)
	return topics, rows.Err()
}

// memberPrefix names the leases that say which relays are alive: each
// relay renews its own as it renews its lanes' (see share).
const memberPrefix = "fxcqrs:relay:"

// members is how many relays are alive: those whose member lease has not
// expired, this one included. It asks the database at most once per
// quarter lease, and renews this relay's own lease first.
func (r *Relay) members(ctx context.Context) (int, error) {
	now := r.now()
	if r.live > 0 && now.Sub(r.liveAt) < r.cfg.Lease/4 && !now.Before(r.liveAt) {
		return r.live, nil
	}
	if _, err := r.leases.Take(ctx, memberPrefix+r.leases.Owner()); err != nil {
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
func (r *Relay) held(topic string, lanes []int) []int {
	var out []int
	for _, n := range lanes {
		if r.leases.Held(schema.Lane{Topic: topic, N: n}.Lease()) {
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
func (r *Relay) sendTopic(ctx context.Context, topic string, lanes []int) (int, error) {
	// The topic's lanes are its configured number, and any beyond that
	// still holding rows (the number was lowered): the lanes of this pass
	// may be only those a commit just wrote to.
	all := slices.Clone(lanes)
	for n := range LanesOf(r.cfg, topic) {
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
		got, ok, err := r.drain(ctx, schema.Lane{Topic: topic, N: n})
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
		if err := r.giveBack(ctx, schema.Lane{Topic: topic, N: n}); err != nil {
			errs = append(errs, err)
		}
	}
	return sent, errors.Join(errs...)
}

// giveBack drops this relay's lease on l, for another relay to take it.
func (r *Relay) giveBack(ctx context.Context, l schema.Lane) error {
	if err := r.sender.record(ctx, l); err != nil {
		return err // kept a while longer: given back at the next pass
	}
	return r.leases.GiveBack(ctx, l.Lease())
}

// laneNumbers returns the lanes of topic that hold rows: a loose index
// scan, one lookup per lane.
func (r *Relay) laneNumbers(ctx context.Context, topic string) ([]int, error) {
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

// releaseLeases drops every lease this relay holds, as it stops: its
// lanes go to the others at once, not when they expire.
func (r *Relay) releaseLeases() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.leases.ReleaseAll(ctx); err != nil {
		r.log.Warn("relay: leases not released; they expire", zap.Error(err))
	}
}
