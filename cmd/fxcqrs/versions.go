package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// versions list, versions check.

// reach is what a service reads of one event name: the versions from
// oldest (the first its upcasters read) to current.
type reach struct{ oldest, current int }

// reaches is the -reach flags: NAME=OLDEST..CURRENT, or NAME=CURRENT for
// a type without upcasters.
type reaches map[string]reach

func (r reaches) String() string { return "" }

func (r reaches) Set(s string) error {
	name, span, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("-reach %q: NAME=OLDEST..CURRENT, or NAME=CURRENT", s)
	}
	from, to, isSpan := strings.Cut(span, "..")
	if !isSpan {
		from, to = span, span
	}
	oldest, err1 := strconv.Atoi(from)
	current, err2 := strconv.Atoi(to)
	if err1 != nil || err2 != nil || oldest < 1 || current < oldest {
		return fmt.Errorf("-reach %q: versions are integers from 1, the oldest first", s)
	}
	r[name] = reach{oldest: oldest, current: current}
	return nil
}

// sagasTable is the table "versions" names the unfinished sagas' stored
// contexts by (their definition's name and context version).
const sagasTable = "sagas"

// versions lists the event names and versions the outbox's tables hold,
// and the saga definitions and context versions of the unfinished sagas
// (from their indexed columns, not the payloads); "versions check" with
// the -reach of each event name and the -saga of each saga the service
// reads lists those it cannot read and fails when there are any: a check
// before a deploy.
func (c *cli) versions(ctx context.Context, sub string, args []string) error {
	fs := flag.NewFlagSet("versions "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	want, wantSagas := reaches{}, reaches{}
	if sub == "check" {
		fs.Var(want, "reach", "NAME=OLDEST..CURRENT: the versions of NAME the service reads (repeat per name)")
		fs.Var(wantSagas, "saga", "NAME=OLDEST..CURRENT: the context versions of saga NAME the service reads (repeat per saga)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if sub == "check" && len(want) == 0 && len(wantSagas) == 0 {
		return errors.New("versions check: give the -reach of each event name, and the -saga of each saga, the service reads")
	}
	stored, err := c.admin.Versions(ctx)
	if err != nil {
		return err
	}
	contexts, err := c.sagaContexts(ctx)
	if err != nil {
		return err
	}
	stored = append(stored, contexts...)
	type finding struct {
		fxoutbox.StoredVersion
		Reason string `json:"reason,omitempty"`
	}
	var (
		out  []finding
		rows [][]string
	)
	for _, v := range stored {
		f := finding{StoredVersion: v}
		r, known := want[v.Name]
		if v.Table == sagasTable {
			r, known = wantSagas[v.Name]
		}
		switch {
		case sub != "check":
		case !known:
			continue // a name the service does not read: not its to check
		case v.Version > r.current:
			f.Reason = fmt.Sprintf("version %d is newer than the service's version %d", v.Version, r.current)
		case v.Version < r.oldest:
			f.Reason = fmt.Sprintf("version %d has no upcaster path to version %d: the upcasters reach it from version %d only", v.Version, r.current, r.oldest)
		default:
			continue
		}
		out = append(out, f)
		rows = append(rows, []string{v.Table, safe(v.Name, false), strconv.Itoa(v.Version), strconv.FormatInt(v.Rows, 10), f.Reason})
	}
	if err := c.print(out, []string{"TABLE", "NAME", "VERSION", "ROWS", "REASON"}, rows); err != nil {
		return err
	}
	if sub == "check" && len(out) > 0 {
		return fmt.Errorf("versions check: %d stored versions no upcaster chain reaches", len(out))
	}
	return nil
}

// sagaContexts is the unfinished sagas by definition and context
// version, as rows of the table "sagas"; none when the database has no
// saga tables (a service without sagas). Saga tables too old to have
// context versions are an error that says to migrate them.
func (c *cli) sagaContexts(ctx context.Context) ([]fxoutbox.StoredVersion, error) {
	contexts, err := c.sagas.ContextVersions(ctx)
	if err != nil {
		if !c.hasSagaTables(ctx) {
			return nil, nil
		}
		if serr := c.sagas.CheckSchema(ctx); serr != nil {
			return nil, fmt.Errorf("versions: the saga contexts: %w", serr)
		}
		return nil, fmt.Errorf("versions: the saga contexts: %w", err)
	}
	out := make([]fxoutbox.StoredVersion, len(contexts))
	for i, sc := range contexts {
		out[i] = fxoutbox.StoredVersion{Table: sagasTable, Name: sc.Saga, Version: sc.Version, Rows: sc.Sagas}
	}
	return out, nil
}

// hasSagaTables reports whether the database has the saga tables: the
// sagas' table (fxsaga.Tables' default name, which the command line
// uses) can be read.
func (c *cli) hasSagaTables(ctx context.Context) bool {
	rows, err := c.db.QueryContext(ctx, "SELECT 1 FROM fxcqrs_sagas WHERE 1 = 0")
	if err != nil {
		return false
	}
	return rows.Close() == nil
}
