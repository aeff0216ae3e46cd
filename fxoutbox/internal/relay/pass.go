package relay

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sort"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// One pass of the relay: the topics, their leases, their batches.

// safePass is pass with its panic (a publisher's, say) turned into an
// error: the relay runs on a goroutine of its own, where a panic would
// take the process down. The rows it was sending wait, as for any error.
func (r *Relay) safePass() (sent int, err error) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("relay: a pass panicked; its rows wait", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("fxoutbox: relay panicked: %v", v)
		}
	}()
	return r.pass()
}

// pass sends what it can of every topic's lanes it can lease, and
// reports how many rows it sent.
func (r *Relay) pass() (int, error) {
	ctx := context.Background()
	var errs []error
	topics, lanes, err := r.passLanes(ctx)
	if err != nil {
		return 0, err
	}
	sent := 0
	for _, topic := range topics {
		if topic == r.delivery.Topic && (!r.local.Ready()) {
			continue // no mediator here: a replica that has one delivers them
		}
		select {
		case <-r.stop:
			return sent, nil
		default:
		}
		n, err := r.sendTopic(ctx, topic, lanes[topic])
		sent += n
		if err != nil {
			errs = append(errs, err) // other topics go on
		}
	}
	if len(errs) > 0 || sent >= r.cfg.BatchSize {
		r.discoveredAt = time.Time{} // rows may wait that no commit announces: look at the table next time
	}
	return sent, errors.Join(errs...)
}

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
			return sent, held, err // !ok: another relay sends this lane
		}
		held = true
		n, err := r.send(ctx, l)
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
