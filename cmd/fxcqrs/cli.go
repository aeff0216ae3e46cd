package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	fxoutbox "github.com/fxcqrs/fxcqrs/outbox"
	fxsaga "github.com/fxcqrs/fxcqrs/saga"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// cli is one run: where it reads and how it prints.
type cli struct {
	out    io.Writer
	asJSON bool
	admin  *fxoutbox.Admin
	sagas  *fxsaga.SQL
	db     *sql.DB
}

const usage = `usage: fxcqrs [-dialect D -dsn DSN] [-json] COMMAND
  outbox status
  dead list [-topic T] [-name N] [-error TEXT] [-since T] [-until T] [-discarded] [-limit N]
  dead show ID
  dead replay -who ME -why REASON ID...
  dead discard -who ME -why REASON ID...
  saga list [-name N] [-status S] [-limit N]
  saga show ID
  saga retry -who ME -why REASON ID
  saga compensate -from STEP -who ME -why REASON ID
  saga resolve -who ME -why REASON ID`

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("fxcqrs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dialect := fs.String("dialect", os.Getenv("FXCQRS_DIALECT"), "postgresql, mysql or sqlite (FXCQRS_DIALECT)")
	dsn := fs.String("dsn", os.Getenv("FXCQRS_DSN"), "the database (FXCQRS_DSN)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w\n%s", err, usage)
	}
	rest := fs.Args()
	if len(rest) < 2 {
		return errors.New(usage)
	}
	var d fxoutbox.Dialect
	if err := d.UnmarshalText([]byte(*dialect)); err != nil {
		return fmt.Errorf("-dialect: %w", err)
	}
	if *dsn == "" {
		return errors.New("-dsn (or FXCQRS_DSN) names the database")
	}
	db, err := sql.Open(map[fxoutbox.Dialect]string{fxoutbox.PostgreSQL: "pgx", fxoutbox.MySQL: "mysql", fxoutbox.SQLite: "sqlite"}[d], *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	admin, err := fxoutbox.NewAdmin(db, d, fxoutbox.Tables{}, nil)
	if err != nil {
		return err
	}
	sagas, err := fxsaga.NewSQL(db, d, fxsaga.Tables{}, 0)
	if err != nil {
		return err
	}
	c := &cli{out: out, asJSON: *asJSON, admin: admin, sagas: sagas, db: db}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch rest[0] + " " + rest[1] {
	case "outbox status":
		return c.outboxStatus(ctx)
	case "dead list":
		return c.deadList(ctx, rest[2:])
	case "dead show":
		return c.deadShow(ctx, rest[2:])
	case "dead replay", "dead discard":
		return c.deadRepair(ctx, rest[1], rest[2:])
	case "saga list":
		return c.sagaList(ctx, rest[2:])
	case "saga show":
		return c.sagaShow(ctx, rest[2:])
	case "saga retry", "saga compensate", "saga resolve":
		return c.sagaMark(ctx, rest[1], rest[2:])
	}
	return fmt.Errorf("unknown command %q\n%s", strings.Join(rest[:2], " "), usage)
}

// print writes v as JSON, or as a table of rows under head.
func (c *cli) print(v any, head []string, rows [][]string) error {
	if c.asJSON {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(head, "\t"))
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

func (c *cli) outboxStatus(ctx context.Context) error {
	backlog, err := c.admin.Backlog(ctx)
	if err != nil {
		return err
	}
	dead, err := c.admin.DeadLetters(ctx)
	if err != nil {
		return err
	}
	sched, err := c.admin.Scheduled(ctx)
	if err != nil {
		return err
	}
	leases, err := c.admin.Leases(ctx)
	if err != nil {
		return err
	}
	if c.asJSON {
		return c.print(map[string]any{"backlog": backlog, "deadLetters": dead, "scheduled": sched, "leases": leases}, nil, nil)
	}
	deadBy := map[string]int{}
	for _, d := range dead {
		deadBy[d.Topic] = d.Rows
	}
	owner := map[string]fxoutbox.Lease{}
	for _, l := range leases {
		owner[l.Topic] = l
	}
	topics := map[string]bool{}
	var rows [][]string
	for _, b := range backlog {
		topics[b.Topic] = true
		rows = append(rows, []string{b.Topic, strconv.Itoa(b.Rows), strconv.Itoa(b.Due), b.Lag.Round(time.Millisecond).String(), strconv.Itoa(deadBy[b.Topic]), leaseOf(owner[b.Topic])})
	}
	for _, d := range dead {
		if !topics[d.Topic] {
			rows = append(rows, []string{d.Topic, "0", "0", "0s", strconv.Itoa(d.Rows), leaseOf(owner[d.Topic])})
		}
	}
	if err := c.print(nil, []string{"TOPIC", "ROWS", "DUE", "LAG", "DEAD", "LEASE"}, rows); err != nil {
		return err
	}
	next := "none"
	if !sched.Next.IsZero() {
		next = sched.Next.UTC().Format(time.RFC3339)
	}
	_, err = fmt.Fprintf(c.out, "scheduled: %d, next due %s\n", sched.Rows, next)
	return err
}

func leaseOf(l fxoutbox.Lease) string {
	if l.Owner == "" {
		return "-"
	}
	return l.Owner + " until " + l.Until.UTC().Format(time.RFC3339)
}

func (c *cli) deadList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dead list", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f fxoutbox.DeadLetterFilter
	fs.StringVar(&f.Topic, "topic", "", "only this topic")
	fs.StringVar(&f.Name, "name", "", "only this event name")
	fs.StringVar(&f.ErrorContains, "error", "", "only letters whose error has this text")
	since := fs.String("since", "", "failed at or after (RFC 3339)")
	until := fs.String("until", "", "failed before (RFC 3339)")
	fs.BoolVar(&f.Discarded, "discarded", false, "the discarded letters instead")
	fs.IntVar(&f.Limit, "limit", 100, "at most this many")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if f.Since, err = parseTime(*since); err != nil {
		return fmt.Errorf("-since: %w", err)
	}
	if f.Until, err = parseTime(*until); err != nil {
		return fmt.Errorf("-until: %w", err)
	}
	dead, err := c.admin.ListDead(ctx, f)
	if err != nil {
		return err
	}
	rows := make([][]string, len(dead))
	for i, d := range dead {
		rows[i] = []string{strconv.FormatInt(d.ID, 10), d.Topic, d.Name, d.MessageID, timeOf(d.FailedAt), oneLine(d.Error, 80)}
	}
	return c.print(dead, []string{"ID", "TOPIC", "NAME", "MESSAGE", "FAILED", "ERROR"}, rows)
}

func (c *cli) deadShow(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("dead show ID")
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		return fmt.Errorf("dead show: %q is no id", args[0])
	}
	d, err := c.admin.Dead(ctx, id)
	if err != nil {
		return err
	}
	if c.asJSON {
		return c.print(d, nil, nil)
	}
	fmt.Fprintf(c.out, "id:       %d\ntopic:    %s\nname:     %s\nmessage:  %s\nfailed:   %s\nerror:    %s\n", d.ID, d.Topic, d.Name, d.MessageID, timeOf(d.FailedAt), d.Error)
	if !d.Discarded.IsZero() {
		fmt.Fprintf(c.out, "discarded: %s: %s\n", timeOf(d.Discarded), d.DiscardReason)
	}
	fmt.Fprintln(c.out, "metadata:")
	for k, v := range d.Metadata {
		fmt.Fprintf(c.out, "  %s: %s\n", k, v)
	}
	_, err = fmt.Fprintf(c.out, "payload:\n%s\n", d.Payload)
	return err
}

func (c *cli) deadRepair(ctx context.Context, action string, args []string) error {
	fs := flag.NewFlagSet("dead "+action, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	who := fs.String("who", os.Getenv("USER"), "who asks (recorded)")
	why := fs.String("why", "", "why (recorded; a discarded letter keeps it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ids []int64
	for _, a := range fs.Args() {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return fmt.Errorf("dead %s: %q is no id", action, a)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return fmt.Errorf("dead %s: which letters? give their ids", action)
	}
	do := c.admin.Replay
	if action == "discard" {
		do = c.admin.Discard
	}
	n, err := do(ctx, ids, *who, *why)
	if err != nil {
		return err
	}
	if c.asJSON {
		return c.print(map[string]int{action + "ed": n}, nil, nil)
	}
	_, err = fmt.Fprintf(c.out, "%s: %d of %d (the others were replayed or discarded already, or are unknown)\n", action, n, len(ids))
	return err
}

func (c *cli) sagaList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("saga list", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", "", "only this saga")
	status := fs.String("status", "", "only this status: RUNNING, WAITING, COMPENSATING, FAILED, SET_ASIDE, …")
	limit := fs.Int("limit", 100, "at most this many")
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
	states, err := c.sagas.List(ctx, *name, fxsaga.Status(strings.ToUpper(*status)), *limit)
	if err != nil {
		return err
	}
	rows := make([][]string, len(states))
	for i, st := range states {
		waits := ""
		if st.Status == fxsaga.Waiting {
			waits = st.Awaiting + " " + st.Key + " until " + timeOf(st.Deadline)
		}
		rows[i] = []string{st.ID, st.Name, string(st.Status), strconv.Itoa(st.Step), waits, oneLine(st.Error, 60)}
	}
	return c.print(states, []string{"ID", "SAGA", "STATUS", "STEP", "WAITS FOR", "ERROR"}, rows)
}

func (c *cli) sagaShow(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("saga show ID")
	}
	st, err := c.sagas.Load(ctx, args[0])
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
	fmt.Fprintf(c.out, "saga:    %s %s\nstatus:  %s at step %d (version %d)\n", st.Name, st.ID, st.Status, st.Step, st.Version)
	if st.Status == fxsaga.Waiting {
		fmt.Fprintf(c.out, "waits:   for %s %q until %s\n", st.Awaiting, st.Key, timeOf(st.Deadline))
	}
	if st.Error != "" {
		fmt.Fprintf(c.out, "error:   %s\n", st.Error)
	}
	fmt.Fprintf(c.out, "context: %s\nlog:\n", st.Context)
	for _, e := range entries {
		outcome := "ok"
		if e.Err != "" {
			outcome = e.Err
		}
		fmt.Fprintf(c.out, "  step %d %-13s %s\n", e.Step, e.Action, outcome)
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

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339, s)
}

func timeOf(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// oneLine is s on one line, cut to n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
