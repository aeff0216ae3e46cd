package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Three rounds of two benchmarks: the ratio is taken round by round
// (3.0, 2.0, 2.5 → 2.5), not as a ratio of medians (40 / 20 = 2.0).
const threeRounds = `command: (cd x && go test -run '^$' -bench . -count 1)
rounds: 3
date: 2026-12-07
pkg: x
BenchmarkSend/direct-2   	100	10.00 ns/op	0 B/op	0 allocs/op
BenchmarkSend/fxcqrs-2   	100	30.00 ns/op	32 B/op	1 allocs/op
BenchmarkRate-2          	1	0 ns/op	1500 rows/s
BenchmarkSend/direct-2   	100	20.00 ns/op	0 B/op	0 allocs/op
BenchmarkSend/fxcqrs-2   	100	40.00 ns/op	32 B/op	1 allocs/op
BenchmarkRate-2          	1	0 ns/op	2500 rows/s
BenchmarkSend/direct-2   	100	30.00 ns/op	0 B/op	0 allocs/op
BenchmarkSend/fxcqrs-2   	100	75.00 ns/op	32 B/op	1 allocs/op
BenchmarkRate-2          	1	0 ns/op	2000 rows/s
PASS
`

func writeFixture(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRatiosAreTakenRoundByRound(t *testing.T) {
	dir := writeFixture(t, map[string]string{"r.txt": threeRounds})
	r, err := ReadResults(filepath.Join(dir, "r.txt"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := r.Ratios("Send/fxcqrs", "Send/direct", "ns/op")
	if err != nil {
		t.Fatal(err)
	}
	if got := Median(rs); got != 2.5 {
		t.Errorf("median of round-by-round ratios %v = %v, want 2.5", rs, got)
	}
	if v, err := r.Samples("Rate", "rows/s"); err != nil || Median(v) != 2000 {
		t.Errorf("a b.ReportMetric unit: %v, %v", v, err)
	}
	if _, err := r.Samples("Send/gone", "ns/op"); err == nil || !strings.Contains(err.Error(), "Send/direct") {
		t.Errorf("a missing benchmark's error does not list the file's: %v", err)
	}
}

func TestReadResultsRefusesUnevenRounds(t *testing.T) {
	dir := writeFixture(t, map[string]string{"r.txt": strings.Replace(threeRounds, "rounds: 3", "rounds: 2", 1)})
	if _, err := ReadResults(filepath.Join(dir, "r.txt")); err == nil || !strings.Contains(err.Error(), "one a round") {
		t.Errorf("3 results for 2 rounds read without error: %v", err)
	}
}

func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{0.6321: "0.632", 1.276: "1.28", 42.47: "42.5", 185.9: "186", 1543: "1,543", 10370: "10,370", 8020000: "8,020,000", -41: "−41"} {
		if got := FormatNumber(v); got != want {
			t.Errorf("FormatNumber(%v) = %q, want %q", v, got, want)
		}
	}
	for v, want := range map[float64]string{1.1534: "1.15×", 0.25: "0.25×", 57.3: "57×"} {
		if got := FormatRatio(v); got != want {
			t.Errorf("FormatRatio(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestFiguresCheckFailsOnATypedFigure(t *testing.T) {
	page := "# P\n\n" +
		"<!-- figures: benchmarks/results/r.txt\n" +
		"`Send` costs {{ns \"Send/fxcqrs\"}} ns, {{x \"Send/fxcqrs\" \"Send/direct\" \"ns/op\"}} a direct call; {{span \"Rate\" \"rows/s\"}} rows/s.\n" +
		"-->\n" +
		"`Send` costs 41 ns, 3.00× a direct call.\n" + // typed over
		figuresEnd + "\n\n" +
		"<!-- figures: benchmarks/results/later.txt\n{{ns \"X\"}}\n-->\n" + figuresEnd + "\n\n" +
		"<!-- figures: benchmarks/results/r.txt\n{{ns \"Send/gone\"}}\n-->\n" + figuresEnd + "\n"
	dir := writeFixture(t, map[string]string{"benchmarks/results/r.txt": threeRounds, "docs/p.md": page})
	problems, fixed := CheckFigures(dir, []string{"docs/p.md"})
	assertProblems(t, problems, []string{
		"docs/p.md:3: the figures differ from what benchmarks/results/r.txt gives: run `go test -run TestFigures -update`",
		"docs/p.md:9: the figures differ from what benchmarks/results/later.txt gives", // not measured yet: says so
		`docs/p.md:14: template: benchmarks/results/r.txt:1:2: executing "benchmarks/results/r.txt" at <ns "Send/gone">: error calling ns: no benchmark "Send/gone"`,
	})
	want := fixed["docs/p.md"]
	for _, s := range []string{
		"`Send` costs 40 ns, 2.50× a direct call; 1,500–2,500 rows/s.",
		"[`benchmarks/results/r.txt`](../benchmarks/results/r.txt) (2026-12-07, 3 rounds",
		"`make bench-figures SUITES=r`, which runs `(cd x && go test -run '^$' -bench . -count 1)`",
		"*Not measured yet: `make bench-figures SUITES=later` writes `benchmarks/results/later.txt`",
	} {
		if !strings.Contains(want, s) {
			t.Errorf("the page it would write lacks %q:\n%s", s, want)
		}
	}
	// Written back, the page passes but for the template that names no benchmark.
	dir2 := writeFixture(t, map[string]string{"benchmarks/results/r.txt": threeRounds, "docs/p.md": want})
	problems, _ = CheckFigures(dir2, []string{"docs/p.md"})
	if len(problems) != 1 {
		t.Errorf("after -update: %v", problems)
	}
}

func TestTypedFigureCheck(t *testing.T) {
	page := "# P\n" +
		"Send takes 42 ns.\n" + // 2
		"It is 1.15× the floor.\n" + // 3
		"It holds 4×`InFlight` records.\n" +
		"The relay drains 20,000 rows/s at p99 8 ms.\n" + // 5
		"```sh\n41 ns\n```\n" +
		"<!-- figures: benchmarks/results/r.txt\n{{ns \"Send/fxcqrs\"}} ns\n-->\n45 ns\n" + figuresEnd + "\n" +
		"A lease of 4 s.\n"
	dir := writeFixture(t, map[string]string{"docs/p.md": page})
	assertProblems(t, CheckTypedFigures(dir, []string{"docs/p.md"}), []string{
		`docs/p.md:2: "42 ns" reads as a typed measurement`,
		`docs/p.md:3: "5× " reads as a typed measurement`,
		`docs/p.md:5: "0 rows/s" reads as a typed measurement`,
	})
}
