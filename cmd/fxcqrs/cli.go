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
	"unicode"
	"unicode/utf8"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
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

const usage = `usage: fxcqrs [-dialect D -dsn DSN] [-schema S] [-tenant T] [-json] COMMAND
  -tenant T: one tenant's rows alone, in the shared mode ("" the default tenant's; absent: every tenant's)
  -schema S: a tenant's PostgreSQL schema (its store), set as the connection's search_path
  outbox status
  tenant list
  repair list [-limit N]
  dead list [-topic T] [-name N] [-error TEXT] [-since T] [-until T] [-discarded] [-limit N] [-offset N] [-oldest]
  dead show ID
  dead replay -who ME -why REASON ID...
  dead discard -who ME -why REASON ID...
  dead release -topic T -key K -who ME -why REASON
  saga list [-name N] [-status S] [-limit N] [-offset N] [-oldest]
  saga show ID | saga show -key KEY [-saga NAME]
  saga retry -who ME -why REASON ID
  saga compensate -from STEP -who ME -why REASON ID
  saga resolve -who ME -why REASON ID
  versions list
  versions check -reach NAME=OLDEST..CURRENT (one per event name) -saga NAME=OLDEST..CURRENT (one per saga)
  asyncapi URL   (a service's AsyncAPI document, from its console's asyncapi.json; no database)`

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("fxcqrs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dialect := fs.String("dialect", os.Getenv("FXCQRS_DIALECT"), "postgresql, mysql or sqlite (FXCQRS_DIALECT)")
	dsn := fs.String("dsn", os.Getenv("FXCQRS_DSN"), "the database (FXCQRS_DSN)")
	asJSON := fs.Bool("json", false, "print JSON")
	tenant := fs.String("tenant", "", "one tenant's rows alone (shared mode)")
	pgSchema := fs.String("schema", "", "a tenant's PostgreSQL schema")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w\n%s", err, usage)
	}
	oneTenant := false
	fs.Visit(func(f *flag.Flag) { oneTenant = oneTenant || f.Name == "tenant" })
	rest := fs.Args()
	if len(rest) < 2 {
		return errors.New(usage)
	}
	if oneTenant && rest[0] == "saga" {
		return errors.New("fxcqrs: -tenant does not select sagas: the saga commands read and repair every tenant's sagas of the store; give a tenant's store with -schema or its own -dsn")
	}
	if rest[0] == "asyncapi" {
		return asyncAPI(rest[1:], out) // asyncapi.go
	}
	var d fxoutbox.Dialect
	if err := d.UnmarshalText([]byte(*dialect)); err != nil {
		return fmt.Errorf("-dialect: %w", err)
	}
	if *dsn == "" {
		return errors.New("-dsn (or FXCQRS_DSN) names the database")
	}
	db, err := openDB(d, *dsn, *pgSchema)
	if err != nil {
		return err
	}
	defer db.Close()
	admin, err := fxoutbox.NewAdmin(db, d, fxoutbox.Tables{}, nil)
	if err != nil {
		return err
	}
	if oneTenant {
		admin = admin.ForTenant(*tenant)
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
	case "tenant list":
		return c.tenantList(ctx)
	case "repair list":
		return c.repairList(ctx, rest[2:])
	case "dead list":
		return c.deadList(ctx, rest[2:])
	case "dead show":
		return c.deadShow(ctx, rest[2:])
	case "dead replay", "dead discard":
		return c.deadRepair(ctx, rest[1], rest[2:])
	case "dead release":
		return c.deadRelease(ctx, rest[2:])
	case "saga list":
		return c.sagaList(ctx, rest[2:])
	case "saga show":
		return c.sagaShow(ctx, rest[2:])
	case "saga retry", "saga compensate", "saga resolve":
		return c.sagaMark(ctx, rest[1], rest[2:])
	case "versions list", "versions check":
		return c.versions(ctx, rest[1], rest[2:])
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

// oneLine is s on one line, cut to n runes, made safe for a terminal
// (see safe).
func oneLine(s string, n int) string {
	s = safe(strings.Join(strings.Fields(s), " "), false)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// safe is s with every rune a terminal would act on instead of showing
// written as a Go escape (\x1b, \u202e), and every byte that is not
// UTF-8 as \xNN: a dead letter's error, payload and metadata are anyone's
// input, and an escape sequence in them must not clear the operator's
// screen, set the window's title or turn text around. With lines, a
// newline and a tab are kept (a payload's own layout); without, they are
// escaped too. A backslash is written as it is: the output is for eyes,
// not for parsing (-json is).
func safe(s string, lines bool) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) && (!lines || r != '\n' && r != '\t') {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case lines && (r == '\n' || r == '\t'), r != utf8.RuneError && unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}
