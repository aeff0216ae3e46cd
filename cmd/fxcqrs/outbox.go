package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// outbox status.

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
