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

// versions lists the event names and versions the outbox's tables hold
// (from their indexed columns, not the payloads); "versions check" with
// the -reach of each name the service reads lists those it cannot read
// and fails when there are any: a check before a deploy.
func (c *cli) versions(ctx context.Context, sub string, args []string) error {
	fs := flag.NewFlagSet("versions "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	want := reaches{}
	if sub == "check" {
		fs.Var(want, "reach", "NAME=OLDEST..CURRENT: the versions of NAME the service reads (repeat per name)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if sub == "check" && len(want) == 0 {
		return errors.New("versions check: give the -reach of each event name the service reads")
	}
	stored, err := c.admin.Versions(ctx)
	if err != nil {
		return err
	}
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
