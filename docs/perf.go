package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The performance page's table of the benchmark suite is generated from
// benchmarks/results.txt (benchstat's output of `make bench`), between
// these two lines, so that no figure of it is typed by hand.
const (
	perfBegin = "<!-- generated from benchmarks/results.txt by docs/perf.go: go test -run TestPerformanceTable -update in docs/ -->"
	perfEnd   = "<!-- end generated -->"
)

// PerfTable makes the Markdown table of every benchmark in benchstat's
// output at path: its name and its median time, bytes and allocations
// per operation, each with benchstat's ± interval.
func PerfTable(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close() //nolint:errcheck // read only
	type row struct {
		sec, bytes, allocs string
		other              []string
	}
	rows := map[string]*row{}
	var order []string
	unit := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "│") {
			if u := strings.TrimSpace(strings.Trim(strings.TrimSpace(line), "│")); u != "bench.out" {
				unit = u
			}
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] == "geomean" || strings.HasSuffix(fields[0], ":") {
			continue
		}
		name := strings.TrimSuffix(fields[0], "-2")
		value := strings.Join(fields[1:], " ")
		r, ok := rows[name]
		if !ok {
			r = &row{}
			rows[name] = r
			order = append(order, name)
		}
		switch unit {
		case "sec/op":
			r.sec = value
		case "B/op":
			r.bytes = value
		case "allocs/op":
			r.allocs = value
		default:
			r.other = append(r.other, value+" "+unit) // the scale benchmarks' own units
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| benchmark | time/op | B/op | allocs/op |\n| --- | ---: | ---: | ---: |\n")
	for _, n := range order {
		r := rows[n]
		sec := r.sec
		if len(r.other) > 0 {
			sec += " (" + strings.Join(r.other, ", ") + ")"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", n, sec, r.bytes, r.allocs)
	}
	return strings.TrimRight(b.String(), "\n"), nil
}

// CheckPerformance compares the generated part of docs/performance.md
// with what PerfTable makes of benchmarks/results.txt, and returns the
// page as it should read.
func CheckPerformance(root string) ([]Problem, string) {
	page := filepath.Join(root, "docs", "performance.md")
	data, err := os.ReadFile(page)
	if err != nil {
		return []Problem{{"docs/performance.md", err.Error()}}, ""
	}
	text := string(data)
	i, j := strings.Index(text, perfBegin), strings.Index(text, perfEnd)
	if i < 0 || j < i {
		return []Problem{{"docs/performance.md", "the generated table's markers are missing: put `" + perfBegin + "` and `" + perfEnd + "` where it goes"}}, ""
	}
	table, err := PerfTable(filepath.Join(root, "benchmarks", "results.txt"))
	if err != nil {
		return []Problem{{"benchmarks/results.txt", err.Error()}}, ""
	}
	want := text[:i] + perfBegin + "\n" + table + "\n" + text[j:]
	if want != text {
		return []Problem{{"docs/performance.md", "the benchmark table differs from benchmarks/results.txt: run `go test -run TestPerformanceTable -update` in docs/ (after `make bench` and copying benchstat's output to results.txt)"}}, want
	}
	return nil, want
}
