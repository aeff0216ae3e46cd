package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// saga list, show, retry, compensate, resolve.

func (c *cli) sagaList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("saga list", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", "", "only this saga")
	status := fs.String("status", "", "only this status: RUNNING, WAITING, COMPENSATING, FAILED, SET_ASIDE, …")
	limit := fs.Int("limit", 100, "at most this many")
	offset := fs.Int("offset", 0, "skip this many (a page: -offset 100 -limit 100)")
	oldest := fs.Bool("oldest", false, "the oldest first (default: the newest first)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" && *status == "" {
		counts, err := c.sagas.Counts(ctx)
		if err != nil {
			return err
		}
		rows := make([][]string, len(counts))
		for i, n := range counts {
			rows[i] = []string{n.Name, string(n.Status), strconv.Itoa(n.N)}
		}
		return c.print(counts, []string{"SAGA", "STATUS", "COUNT"}, rows)
	}
	f := fxsaga.Filter{Name: *name, Status: fxsaga.Status(strings.ToUpper(*status)), Limit: *limit, Offset: *offset, OldestFirst: *oldest}
	states, total, err := c.sagas.Page(ctx, f)
	if err != nil {
		return err
	}
	rows := make([][]string, len(states))
	for i, st := range states {
		waits := ""
		if st.Status == fxsaga.Waiting {
			waits = st.Awaiting + " " + st.Key + " until " + timeOf(st.Deadline)
		}
		rows[i] = []string{safe(st.ID, false), safe(st.Name, false), string(st.Status), timeOf(st.Created), strconv.Itoa(st.Step), oneLine(waits, 60), oneLine(st.Error, 60)}
	}
	if err := c.print(states, []string{"ID", "SAGA", "STATUS", "CREATED", "STEP", "WAITS FOR", "ERROR"}, rows); err != nil || c.asJSON {
		return err
	}
	return c.pageLine("sagas", f.Offset, len(states), total, *oldest)
}

func (c *cli) sagaShow(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("saga show", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	key := fs.String("key", "", "the saga of this business key (fxsaga.Saga.KeyBy), the unfinished one first, instead of an id")
	name := fs.String("saga", "", "with -key: only this saga definition")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var (
		st  fxsaga.State
		err error
	)
	switch args = fs.Args(); {
	case *key != "" && len(args) == 0:
		st, err = c.sagaOfKey(ctx, *name, *key)
	case *key == "" && len(args) == 1:
		st, err = c.sagas.Load(ctx, args[0])
	default:
		return errors.New("saga show ID, or saga show -key KEY [-saga NAME]")
	}
	if err != nil {
		return err
	}
	entries, err := c.sagas.Entries(ctx, st.ID)
	if err != nil {
		return err
	}
	sh, hasShape := fxsaga.ShapeOf(st)
	if c.asJSON {
		v := map[string]any{"state": st, "log": entries}
		if hasShape {
			v["mermaid"] = sh.MermaidAt(st)
		}
		return c.print(v, nil, nil)
	}
	fmt.Fprintf(c.out, "saga:    %s %s\nstatus:  %s at step %d (version %d)\n", safe(st.Name, false), safe(st.ID, false), st.Status, st.Step, st.Version)
	if st.BusinessKey != "" {
		fmt.Fprintf(c.out, "key:     %s\n", safe(st.BusinessKey, false))
	}
	if st.Status == fxsaga.Waiting {
		fmt.Fprintf(c.out, "waits:   for %s %q until %s\n", st.Awaiting, st.Key, timeOf(st.Deadline))
	}
	if st.Error != "" {
		fmt.Fprintf(c.out, "error:   %s\n", safe(st.Error, true))
	}
	fmt.Fprintf(c.out, "context: %s\nlog:\n", safe(string(st.Context), true))
	for _, e := range entries {
		outcome := "ok"
		if e.Err != "" {
			outcome = e.Err
		}
		fmt.Fprintf(c.out, "  step %d %-13s %s\n", e.Step, e.Action, safe(outcome, false))
	}
	if hasShape {
		fmt.Fprintf(c.out, "diagram (Mermaid; where it is: class here):\n%s", sh.MermaidAt(st))
	}
	return nil
}

func (c *cli) sagaMark(ctx context.Context, action string, args []string) error {
	fs := flag.NewFlagSet("saga "+action, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	who := fs.String("who", os.Getenv("USER"), "who asks (logged)")
	why := fs.String("why", "", "why (logged)")
	from := fs.Int("from", -1, "compensate: the step to compensate from, by index")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("saga %s: which saga? give its id", action)
	}
	id := fs.Arg(0)
	var st fxsaga.State
	var err error
	switch action {
	case "retry":
		st, err = c.sagas.Retry(ctx, id, *who, *why)
	case "compensate":
		if *from < 0 {
			return errors.New("saga compensate: -from STEP says where compensation starts")
		}
		st, err = c.sagas.CompensateFrom(ctx, id, *from, *who, *why)
	case "resolve":
		st, err = c.sagas.Resolve(ctx, id, *who, *why)
	}
	if err != nil {
		return err
	}
	if c.asJSON {
		return c.print(st, nil, nil)
	}
	next := "a running replica's recovery takes it on its next pass: `saga show` tells when it has"
	if st.Status == fxsaga.Resolved {
		next = "nothing more runs"
	}
	_, err = fmt.Fprintf(c.out, "saga %s is %s at step %d: %s\n", st.ID, st.Status, st.Step, next)
	return err
}

// sagaOfKey is the saga of business key key (of definition name, or of
// any), the unfinished one first; where others have the key too, a first
// line names them.
func (c *cli) sagaOfKey(ctx context.Context, name, key string) (fxsaga.State, error) {
	states, err := c.sagas.ByKey(ctx, name, key)
	if err != nil {
		return fxsaga.State{}, err
	}
	if len(states) == 0 {
		return fxsaga.State{}, fmt.Errorf("no saga has the key %q", key)
	}
	if len(states) > 1 && !c.asJSON {
		ids := make([]string, len(states)-1)
		for i, st := range states[1:] {
			ids[i] = st.ID
		}
		fmt.Fprintf(c.out, "(%d sagas have the key %q; the others: %s)\n", len(states), safe(key, false), strings.Join(ids, ", "))
	}
	return states[0], nil
}
