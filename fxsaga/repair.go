package fxsaga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// The repair side of the SQL store, for the repair tools (cmd/fxcqrs, the
// console): list and show sagas, and mark one for the running service's
// recovery to act on. Each works in ctx's transaction when it has one (a
// tenant's, from fxoutbox.Outbox.InTenant: that tenant's store). A mark is one fenced save, safe while replicas run:
// it takes the saga from the status it was shown in, or fails with
// ErrFenced if a replica moved it since. Compensations are the service's
// code, so the tools never run them: recovery does, on its next pass,
// which the saga's status and log then show.

// Filter selects sagas for Page.
type Filter struct {
	// Name is the definition's ("": every definition).
	Name string
	// Status is the status ("": every status).
	Status Status
	// Limit bounds the page (default 100); Offset skips that many first.
	Limit, Offset int
	// OldestFirst lists the oldest first; by default the newest are, by
	// State.Created (the sagas created before migration 0005 count as the
	// oldest).
	OldestFirst bool
}

// List returns at most limit (default 100) sagas of name ("": every name)
// in status ("": every status), the newest first: Page's first page.
func (s *SQL) List(ctx context.Context, name string, status Status, limit int) ([]State, error) {
	page, _, err := s.Page(ctx, Filter{Name: name, Status: status, Limit: limit})
	return page, err
}

// Page returns the sagas f selects, a page of them, the newest first
// unless f.OldestFirst, and how many f selects in all: what an operator's
// list shows, so that the newest failures are on the first page and the
// total says how many more there are.
func (s *SQL) Page(ctx context.Context, f Filter) ([]State, int, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var where []string
	var args []any
	if f.Name != "" {
		where, args = append(where, "name = ?"), append(args, f.Name)
	}
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, string(f.Status))
	}
	from := " FROM " + quote(s.d, s.tables.Sagas)
	if len(where) > 0 {
		from += " WHERE " + strings.Join(where, " AND ")
	}
	order := " ORDER BY created_ns DESC, id DESC"
	if f.OldestFirst {
		order = " ORDER BY created_ns, id"
	}
	page, err := s.query(ctx, s.d.Rebind("SELECT "+columns+from+order+" LIMIT ? OFFSET ?"), append(args, f.Limit, max(f.Offset, 0))...)
	if err != nil {
		return nil, 0, err
	}
	rows, err := s.conn(ctx).QueryContext(ctx, s.d.Rebind("SELECT COUNT(*)"+from), args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var total int
	for rows.Next() {
		if err := rows.Scan(&total); err != nil {
			return nil, 0, err
		}
	}
	return page, total, rows.Err()
}

// Entries returns the log of saga id, in order.
func (s *SQL) Entries(ctx context.Context, id string) ([]Entry, error) {
	rows, err := s.conn(ctx).QueryContext(ctx, s.d.Rebind("SELECT saga_id, step, action, error FROM "+quote(s.d, s.tables.Log)+" WHERE saga_id = ? ORDER BY id"), id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.SagaID, &e.Step, &e.Action, &e.Err); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ShapeOf returns the Shape st was started with, if it kept one.
func ShapeOf(st State) (Shape, bool) {
	var sh Shape
	if len(st.Shape) == 0 || json.Unmarshal(st.Shape, &sh) != nil {
		return Shape{}, false
	}
	return sh, true
}

// Retry marks a Failed saga for another round of compensation: it is saved
// Compensating from the step whose compensation kept failing, with no
// owner, and the next recovery pass of a running replica compensates it
// (to Compensated, or Failed again). who and why go to its log.
func (s *SQL) Retry(ctx context.Context, id, who, why string) (State, error) {
	return s.mark(ctx, id, "op:retry", who, why, func(st *State) error {
		if st.Status != Failed {
			return fmt.Errorf("fxsaga: saga %s is %s: only a failed saga is retried", id, st.Status)
		}
		st.Status = Compensating
		return nil
	})
}

// CompensateFrom marks a saga set aside (its state did not fit its
// definition) for compensation from step, by index in its shape: the
// next recovery pass compensates that step and the ones before it, in
// reverse. The operator says where: the tool cannot know which steps had
// acted. who and why go to its log.
func (s *SQL) CompensateFrom(ctx context.Context, id string, step int, who, why string) (State, error) {
	return s.mark(ctx, id, "op:compensate", who, why, func(st *State) error {
		if st.Status != SetAside {
			return fmt.Errorf("fxsaga: saga %s is %s: only a saga set aside is compensated from a step", id, st.Status)
		}
		if sh, ok := ShapeOf(*st); ok && (step < 0 || step >= len(sh.Steps)) {
			return fmt.Errorf("fxsaga: saga %s has steps 0 to %d: no step %d", id, len(sh.Steps)-1, step)
		}
		st.Status, st.Step = Compensating, step
		return nil
	})
}

// Resolve closes a Failed or set-aside saga by hand: it is saved Resolved,
// final, its Error saying who resolved it and why; nothing more runs.
func (s *SQL) Resolve(ctx context.Context, id, who, why string) (State, error) {
	return s.mark(ctx, id, "op:resolve", who, why, func(st *State) error {
		if st.Status != Failed && st.Status != SetAside {
			return fmt.Errorf("fxsaga: saga %s is %s: only a failed or set-aside saga is resolved", id, st.Status)
		}
		st.Status = Resolved
		st.Error = strings.TrimSpace(st.Error + "; resolved by " + who + ": " + why)
		return nil
	})
}

// mark loads saga id, changes it with change, and saves it, fenced, with
// no owner (any replica's recovery claims it), logging action.
func (s *SQL) mark(ctx context.Context, id, action, who, why string, change func(*State) error) (State, error) {
	if strings.TrimSpace(who) == "" || strings.TrimSpace(why) == "" {
		return State{}, errors.New("fxsaga: say who asks and why: every repair is logged")
	}
	st, err := s.Load(ctx, id)
	if err != nil {
		return State{}, err
	}
	if err := change(&st); err != nil {
		return State{}, err
	}
	if st.holdsKey() { // back to work: its key may be another's since it failed
		held, err := s.query(ctx, s.active, st.Name, st.Tenant, st.BusinessKey)
		if err != nil {
			return State{}, err
		}
		if len(held) > 0 && held[0].ID != st.ID {
			return State{}, &AlreadyStarted{Saga: st.Name, Key: st.BusinessKey, SagaID: held[0].ID}
		}
	}
	st.Version++
	if tx := fxoutbox.Tx(ctx); tx != nil {
		// A tenant's transaction (fxoutbox.Outbox.InTenant): the repair
		// commits with it.
		if err := s.markIn(ctx, tx, st, action, who, why); err != nil {
			return State{}, err
		}
		return st, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return State{}, err
	}
	if err := s.markIn(ctx, tx, st, action, who, why); err != nil {
		return State{}, errors.Join(err, tx.Rollback())
	}
	return st, tx.Commit()
}

// markIn saves st, marked, with no owner, and logs action, in tx.
func (s *SQL) markIn(ctx context.Context, tx execer, st State, action, who, why string) error {
	res, err := tx.ExecContext(ctx, s.save, string(st.Status), st.Step, string(st.Context), st.Version, st.Error, "", 0,
		st.Awaiting, st.Key, deadlineNs(st.Deadline), st.Timer, joinSteps(st.TimedOut), activeKey(st), max(st.ContextVersion, 1), st.ID, st.Version-1)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = ErrFenced
		}
	}
	if err == nil {
		_, err = tx.ExecContext(ctx, s.log, st.ID, st.Step, action, who+": "+why)
	}
	return err
}
