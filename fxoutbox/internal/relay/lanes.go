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
func (r *Relay) passLanes(ctx context.Context, p *part) ([]string, map[string][]int, error) {
	r.hintMu.Lock()
	lanes := map[string][]int{}
	for l := range p.hinted {
		lanes[l.Topic] = append(lanes[l.Topic], l.N)
	}
	clear(p.hinted)
	r.hintMu.Unlock()
	if p.discover.Swap(false) {
		p.discoveredAt = time.Time{} // the moved rows' topics: from the table
	}
	now := r.now()
	if p.draining || p.discoveredAt.IsZero() || now.Sub(p.discoveredAt) >= r.cfg.PollInterval || now.Before(p.discoveredAt) {
		found, err := r.topics(ctx, p)
		if err != nil {
			return nil, nil, err
		}
		for _, topic := range found {
			ns, err := r.laneNumbers(ctx, p, topic)
			if err != nil {
				return nil, nil, err
			}
			lanes[topic] = append(lanes[topic], ns...)
		}
		p.discoveredAt = now
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

// batchesPerTurn is how many batches a store's turn of a pass sends, its
// lanes taking turns a batch each (and each lane one at least): a hot
// lane does not wait for a new pass per batch, nor hold the others back
// for long.
const batchesPerTurn = 16

// drainOne sends a batch of l of p while this relay holds its lease,
// and counts it off the store's turn (*left); held says whether it held
// the lease, more whether the batch was full (rows may be waiting).
func (r *Relay) drainOne(ctx context.Context, p *part, l schema.Lane, left *int) (sent int, held, more bool, err error) {
	// The lease is a step of the store's turn (Config.StoreTimeout), and
	// so is each statement of the batch (send), each under a deadline of
	// its own. The broker's publish between them is not bounded: it may
	// outlast a deadline while a broker is away (with the whole batch
	// under one, TestBrokerOutage's relay failed turn after turn and
	// never recovered); nor are the delivery topic's handlers, which
	// take their own time.
	sctx, cancel := r.step(ctx)
	ok, err := p.leases.Take(sctx, l.Lease())
	err = stepped(sctx, err)
	cancel()
	if err != nil || !ok {
		if err == nil {
			p.sender.forget(l) // its rows sent and not deleted are the new owner's
		}
		return 0, false, false, err // !ok: another relay sends this lane
	}
	*left--
	n, err := p.sender.send(ctx, l)
	return n, true, err == nil && n >= r.cfg.BatchSize, err
}

// stopping reports whether the relay is asked to stop.
func (r *Relay) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

func (r *Relay) topics(ctx context.Context, p *part) ([]string, error) {
	rows, err := p.db.QueryContext(ctx, p.q.Topics)
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
func (r *Relay) held(p *part, topic string, lanes []int) []int {
	var out []int
	for _, n := range lanes {
		if p.leases.Held(schema.Lane{Topic: topic, N: n}.Lease()) {
			out = append(out, n)
		}
	}
	return out
}

// share is how many of a topic's lanes one relay sends while others are
// alive: its fair part, rounded up, so that every lane has a relay.
func share(lanes, members int) int { return (lanes + members - 1) / max(members, 1) }

// sendTopic sends topic's lanes of p, those this relay holds and, up to
// its share, those nobody holds; then gives back the lanes it holds
// beyond its share, between batches, for another relay to take. It sends
// at most *left batches of the store's turn (at least one per lane),
// and counts them off.
func (r *Relay) sendTopic(ctx context.Context, p *part, topic string, lanes []int, left *int) (int, error) {
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
		sctx, cancel := r.step(ctx)
		live, err := r.members(sctx)
		err = stepped(sctx, err)
		cancel()
		if err != nil {
			return 0, err
		}
		fair = share(fair, live)
	}
	held := r.held(p, topic, all)
	sent := 0
	var errs []error
	// The lanes take turns, a batch each, while the store's turn lasts:
	// a lane with a backlog gets no more of the turn than one that keeps
	// filling (a round per lane at least, the first round whatever is
	// left), so that neither waits for the other's drain.
	var full []int // the lanes whose last batch was full: rows may wait
	for _, n := range lanes {
		if !slices.Contains(held, n) && len(held) >= fair {
			continue // another relay's part
		}
		got, ok, more, err := r.drainOne(ctx, p, schema.Lane{Topic: topic, N: n}, left)
		sent += got
		if ok && !slices.Contains(held, n) {
			held = append(held, n)
		}
		if timedOut(err) {
			return sent, errors.Join(append(errs, err)...) // the store hangs: the rest of its turn waits
		}
		if err != nil {
			errs = append(errs, err)
		} else if more {
			full = append(full, n)
		}
		if r.stopping() {
			return sent, nil
		}
	}
	for len(full) > 0 && *left > 0 {
		next := full[:0]
		for _, n := range full {
			got, _, more, err := r.drainOne(ctx, p, schema.Lane{Topic: topic, N: n}, left)
			sent += got
			if timedOut(err) {
				return sent, errors.Join(append(errs, err)...)
			}
			if err != nil {
				errs = append(errs, err)
			} else if more {
				next = append(next, n)
			}
			if r.stopping() {
				return sent, nil
			}
		}
		full = next
	}
	slices.Sort(held)
	for len(held) > fair { // give back the last ones
		n := held[len(held)-1]
		held = held[:len(held)-1]
		sctx, cancel := r.step(ctx)
		err := stepped(sctx, r.giveBack(sctx, p, schema.Lane{Topic: topic, N: n}))
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return sent, errors.Join(errs...)
}

// giveBack drops this relay's lease on l, for another relay to take it.
func (r *Relay) giveBack(ctx context.Context, p *part, l schema.Lane) error {
	if err := p.sender.record(ctx, l); err != nil {
		return err // kept a while longer: given back at the next pass
	}
	return p.leases.GiveBack(ctx, l.Lease())
}

// laneNumbers returns the lanes of topic that hold rows: a loose index
// scan, one lookup per lane.
func (r *Relay) laneNumbers(ctx context.Context, p *part, topic string) ([]int, error) {
	rows, err := p.db.QueryContext(ctx, p.q.Lanes, topic, topic)
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
	r.hintMu.Lock()
	parts := slices.Clone(r.parts)
	r.hintMu.Unlock()
	for _, p := range parts {
		if err := p.leases.ReleaseAll(ctx); err != nil {
			r.log.Warn("relay: leases not released; they expire", zap.String("tenant", p.id), zap.Error(err))
		}
	}
}
