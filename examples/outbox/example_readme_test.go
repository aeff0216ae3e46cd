package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// printedInREADME is the block under "## What it prints" in README.md.
func printedInREADME(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), "## What it prints")
	if !ok {
		t.Fatal(`README.md has no "## What it prints"`)
	}
	_, block, _ := strings.Cut(after, "```\n")
	block, _, _ = strings.Cut(block, "```")
	return block
}

// The README shows what the program prints on its defaults (its first
// line is main's, naming the databases and the broker).
func TestREADMEShowsTheOutput(t *testing.T) {
	st, err := sqliteSetup()
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, &out, st, nil); err != nil {
		t.Fatal(err)
	}
	_, want, _ := strings.Cut(printedInREADME(t), "\n")
	if got := out.String(); got != want {
		t.Errorf("README.md's \"What it prints\" is not what the example prints; copy this in:\n%s", got)
	}
}
