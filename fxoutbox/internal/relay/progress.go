package relay

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
)

// A lane's progress: the rows the relay has published and not yet
// deleted. The relay deletes them once per window (Config.ProgressInterval
// or Config.ProgressRows), not once per batch: at low load a batch is a
// row or two, and its delete was a commit, a WAL flush, of its own for
// every command. Until they are deleted the relay skips them when it reads
// the lane, so that it never sends them twice itself; a crash sends them
// again from the next relay (at least once, as before, with a larger
// bound).
//
// It skips them rather than reading on after the last of them: row ids
// are taken when a transaction inserts, not when it commits, so a row can
// commit below an id already published, and it must go before its key's
// next row (which its transaction's commit came before). Reading on after
// the last id would leave it behind until the window is recorded, and
// send its key's later rows first.

// progress is one lane's published rows not yet deleted.
type progress struct {
	ids   []int64   // in id order
	since time.Time // by wallNow: when the first of them was published
}

// last is the highest id p holds.
func (p *progress) last() int64 { return p.ids[len(p.ids)-1] }

// has reports whether p holds id.
func (p *progress) has(id int64) bool {
	_, ok := slices.BinarySearch(p.ids, id)
	return ok
}

// deferred reports whether the relay records progress per window (the
// default) rather than after each batch.
func (s *sender) deferred() bool { return s.cfg.ProgressInterval > 0 }

// published keeps rows, which the broker took, as l's progress to record.
func (s *sender) published(l schema.Lane, rows []row) {
	if len(rows) == 0 {
		return
	}
	p := s.progress[l]
	if p == nil {
		p = &progress{since: s.wallNow()}
		s.progress[l] = p
	}
	// rows are in id order; the first is below p's last after a late
	// commit (rowsBeside).
	late := len(p.ids) > 0 && rows[0].id < p.last()
	for _, rw := range rows {
		p.ids = append(p.ids, rw.id)
	}
	if late {
		slices.Sort(p.ids)
	}
	s.unrecorded.Add(int64(len(rows)))
}

// due reports whether l's progress must be recorded now: its window has
// passed, or it holds ProgressRows rows.
func (s *sender) due(l schema.Lane, now time.Time) bool {
	p := s.progress[l]
	if p == nil {
		return false
	}
	return len(p.ids) >= s.cfg.ProgressRows || now.Sub(p.since) >= s.cfg.ProgressInterval || now.Before(p.since)
}

// record deletes l's published rows, fenced by its lease. The rows the
// fence kept (the lease is another relay's now) are forgotten: they are
// that relay's to send and delete. On an error they wait for the next try.
func (s *sender) record(ctx context.Context, l schema.Lane) error {
	p := s.progress[l]
	if p == nil {
		return nil
	}
	// The window may have outlasted a quarter of the lease: renew it (or
	// take it back if it lapsed and nobody took it) so that the fenced
	// delete deletes what was sent; another relay's lease keeps them.
	if ok, err := s.leases.Take(ctx, l.Lease()); err != nil {
		return err
	} else if !ok {
		s.forget(l)
		return nil
	}
	if n, err := s.deleteIDs(ctx, l.Lease(), p.ids); err != nil {
		// The statements before the one that failed deleted their rows
		// (its own rolled back): the next try deletes the rest only, or
		// its fence, finding fewer rows than it names, would take the
		// lease for lost.
		p.ids = p.ids[n:]
		s.unrecorded.Add(-int64(n))
		return err
	}
	s.forget(l)
	return nil
}

// forget drops l's progress unrecorded: the relay lost l's lease, and
// whoever holds it now reads those rows again.
func (s *sender) forget(l schema.Lane) {
	if p := s.progress[l]; p != nil {
		s.unrecorded.Add(-int64(len(p.ids)))
		delete(s.progress, l)
	}
}

// recordDue records the progress of every lane whose window has passed;
// with all, of every lane (the relay stops).
func (s *sender) recordDue(ctx context.Context, all bool) error {
	now := s.wallNow()
	var errs []error
	for l := range s.progress {
		if all || s.due(l, now) {
			errs = append(errs, s.record(ctx, l))
		}
	}
	return errors.Join(errs...)
}

// windowEnd is a channel that receives when the first lane's window
// ends, or nil if no progress waits; or if that window has ended already
// and ended is false.
func (s *sender) windowEnd(ended bool) <-chan time.Time {
	var at time.Time
	for _, p := range s.progress {
		if end := p.since.Add(s.cfg.ProgressInterval); at.IsZero() || end.Before(at) {
			at = end
		}
	}
	if at.IsZero() {
		return nil
	}
	wait := at.Sub(s.wallNow())
	if wait <= 0 && !ended {
		return nil
	}
	return s.wallAfter(max(wait, 0))
}
