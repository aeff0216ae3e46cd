package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// dead list, show, replay, discard.

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
	fs.IntVar(&f.Offset, "offset", 0, "skip this many (a page: -offset 100 -limit 100)")
	oldest := fs.Bool("oldest", false, "the oldest first (default: the newest first)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f.NewestFirst = !*oldest
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
		rows[i] = []string{strconv.FormatInt(d.ID, 10), tenantName(d.Tenant), safe(d.Topic, false), safe(d.Name, false), safe(d.MessageID, false), timeOf(d.FailedAt), oneLine(d.Error, 80)}
	}
	if err := c.print(dead, []string{"ID", "TENANT", "TOPIC", "NAME", "MESSAGE", "FAILED", "ERROR"}, rows); err != nil || c.asJSON {
		return err
	}
	total, err := c.admin.CountDead(ctx, f)
	if err != nil {
		return err
	}
	return c.pageLine("letters", f.Offset, len(dead), total, *oldest)
}

// pageLine says which of a list's total of things the page of n from
// offset shows, in which order, and the offset of the next page.
func (c *cli) pageLine(things string, offset, n, total int, oldest bool) error {
	order := "the newest first"
	if oldest {
		order = "the oldest first"
	}
	if n == 0 {
		_, err := fmt.Fprintf(c.out, "none of %d %s\n", total, things)
		return err
	}
	line := fmt.Sprintf("%s %d-%d of %d, %s", things, offset+1, offset+n, total, order)
	if next := offset + n; next < total {
		line += fmt.Sprintf("; the next: -offset %d", next)
	}
	_, err := fmt.Fprintln(c.out, line)
	return err
}

func (c *cli) deadShow(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "--" { // before a negative id, as replay and discard take it
		args = args[1:]
	}
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
		return c.print(shownLetter{d, payloadText(d)}, nil, nil)
	}
	fmt.Fprintf(c.out, "id:       %d\ntenant:   %s\ntopic:    %s\nname:     %s\nmessage:  %s\nfailed:   %s\nerror:    %s\n",
		d.ID, tenantName(d.Tenant), safe(d.Topic, false), safe(d.Name, false), safe(d.MessageID, false), timeOf(d.FailedAt), safe(d.Error, true))
	if !d.Discarded.IsZero() {
		fmt.Fprintf(c.out, "discarded: %s: %s\n", timeOf(d.Discarded), safe(d.DiscardReason, true))
	}
	if d.Key != "" {
		fmt.Fprintf(c.out, "parks key: %s\n", safe(d.Key, false))
	}
	if !d.Released.IsZero() {
		fmt.Fprintf(c.out, "released: %s (waits until the subscription has it)\n", timeOf(d.Released))
	}
	fmt.Fprintln(c.out, "metadata:")
	for _, k := range slices.Sorted(maps.Keys(d.Metadata)) {
		fmt.Fprintf(c.out, "  %s: %s\n", safe(k, false), safe(d.Metadata[k], false))
	}
	_, err = fmt.Fprintf(c.out, "payload:\n%s\n", safe(shownPayload(d), true))
	return err
}

// shownLetter is a dead letter as dead show -json writes it: the letter,
// whose payload JSON writes in base64 (it may be any bytes), and, when the
// payload is UTF-8 text, that text, escaped by JSON.
type shownLetter struct {
	fxoutbox.DeadLetter
	PayloadText string `json:"payloadText,omitempty"`
}

// payloadText is d's payload as text: decoded when it is protobuf of a
// registered type (see payload.go), or "" when it is not UTF-8.
func payloadText(d fxoutbox.DeadLetter) string {
	if text, decoded := decodedPayload(d); decoded || utf8.Valid(d.Payload) {
		return text
	}
	return ""
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
	others := "the others were replayed or discarded already, or are unknown"
	if tenant, one := c.admin.Tenant(); one {
		others += ", or not tenant " + tenantName(tenant) + "'s"
	}
	_, err = fmt.Fprintf(c.out, "%s: %d of %d (%s)\n", action, n, len(ids), others)
	return err
}

// deadRelease replays every parked letter of a key (see
// fxoutbox.Admin.Release).
func (c *cli) deadRelease(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dead release", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	topic := fs.String("topic", "", "the topic (required)")
	key := fs.String("key", "", "the parked key (required)")
	who := fs.String("who", os.Getenv("USER"), "who asks (recorded)")
	why := fs.String("why", "", "why (recorded)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *topic == "" || *key == "" {
		return errors.New("dead release: -topic and -key name the parked key")
	}
	n, err := c.admin.Release(ctx, *topic, *key, *who, *why)
	if err != nil {
		return err
	}
	if c.asJSON {
		return c.print(map[string]int{"released": n}, nil, nil)
	}
	_, err = fmt.Fprintf(c.out, "release: %d letters of key %s on %s go back, in their order\n", n, *key, *topic)
	return err
}
