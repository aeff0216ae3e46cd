package main

import (
	"os"
	"strings"
	"testing"
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

// The README shows what the program prints; the breaker's clock is
// simulated, so it prints the same on every run.
func TestREADMEShowsTheOutput(t *testing.T) {
	var out strings.Builder
	if err := run(&out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), printedInREADME(t); got != want {
		t.Errorf("README.md's \"What it prints\" is not what the example prints; copy this in:\n%s", got)
	}
}
