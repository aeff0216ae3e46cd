package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

// A page's measured figures are generated, never typed: a region
//
//	<!-- figures: benchmarks/results/mediator.txt
//	Send costs {{ns "Send/fxcqrs"}} ns, {{x "Send/fxcqrs" "Send/direct" "ns/op"}} a direct call.
//	-->
//	…what the template gives…
//	<!-- end figures -->
//
// holds a text/template (in the comment, which Markdown does not show)
// whose functions read the results file it names (see figureFuncs), and
// after it the text it gives, followed by a line that names the file and
// the command that wrote it. CheckFigures fails while the text and the
// file disagree; `go test -run TestFigures -update` in docs/ rewrites it.
const (
	figuresOpen = "<!-- figures: "
	figuresEnd  = "<!-- end figures -->"
)

// figureFuncs are the template's functions over one results file. Units
// are go test's: "ns/op", "B/op", "allocs/op", or a b.ReportMetric unit.
// A ratio or a difference is taken round by round, then its median: the
// two benchmarks ran in the same round of the same run.
//
//	med NAME UNIT, lo NAME UNIT, hi NAME UNIT   the median, least, most (numbers)
//	ratio A B UNIT, diff A B UNIT               A ÷ B, A − B: the median over rounds (a number)
//	ratiolo / ratiohi A B UNIT                  the least and most of A ÷ B
//	num X, times X, div X Y                     format a number, a ratio (1.15×); X ÷ Y
//	v NAME UNIT                                 num (med NAME UNIT)
//	ns / us / ms NAME                           the median ns/op in ns, µs, ms
//	span NAME UNIT [DIVISOR]                    "least–most" over the rounds
//	rspan NAME UNIT                             span of a benchmark's own ratio metric, as ratios
//	x A B UNIT                                  times (ratio A B UNIT)
//	xspan A B UNIT                              "least–most×" of A ÷ B
//	table                                       every benchmark: median ± farthest round
//	list A B …                                  the strings, for range
//	rounds NAME UNIT                            the figure of each round, in round order (numbers)
func figureFuncs(r *Results) template.FuncMap {
	stat := func(pick func([]float64) float64) func(string, string) (float64, error) {
		return func(name, unit string) (float64, error) {
			vs, err := r.Samples(name, unit)
			if err != nil {
				return 0, err
			}
			return pick(vs), nil
		}
	}
	pair := func(f func(a, b, unit string) ([]float64, error), pick func([]float64) float64) func(string, string, string) (float64, error) {
		return func(a, b, unit string) (float64, error) {
			vs, err := f(a, b, unit)
			if err != nil {
				return 0, err
			}
			return pick(vs), nil
		}
	}
	med, lo, hi := stat(Median), stat(minOf), stat(maxOf)
	ratio := pair(r.Ratios, Median)
	scaled := func(div float64) func(string) (string, error) {
		return func(name string) (string, error) {
			v, err := med(name, "ns/op")
			return FormatNumber(v / div), err
		}
	}
	return template.FuncMap{
		"med": med, "lo": lo, "hi": hi,
		"ratio":   ratio,
		"ratiolo": pair(r.Ratios, minOf),
		"ratiohi": pair(r.Ratios, maxOf),
		"diff":    pair(r.Differences, Median),
		"num":     FormatNumber,
		"times":   FormatRatio,
		"div":     func(x, y float64) float64 { return x / y },
		"v": func(name, unit string) (string, error) {
			v, err := med(name, unit)
			return FormatNumber(v), err
		},
		"ns": scaled(1), "us": scaled(1e3), "ms": scaled(1e6),
		"span": func(name, unit string, divisor ...float64) (string, error) {
			d := 1.0
			if len(divisor) > 0 {
				d = divisor[0]
			}
			vs, err := r.Samples(name, unit)
			if err != nil {
				return "", err
			}
			return FormatNumber(minOf(vs)/d) + "–" + FormatNumber(maxOf(vs)/d), nil
		},
		"rspan": func(name, unit string) (string, error) {
			vs, err := r.Samples(name, unit)
			if err != nil {
				return "", err
			}
			return strings.TrimSuffix(FormatRatio(minOf(vs)), "×") + "–" + FormatRatio(maxOf(vs)), nil
		},
		"x": func(a, b, unit string) (string, error) {
			v, err := ratio(a, b, unit)
			return FormatRatio(v), err
		},
		"xspan": func(a, b, unit string) (string, error) {
			vs, err := r.Ratios(a, b, unit)
			if err != nil {
				return "", err
			}
			return strings.TrimSuffix(FormatRatio(minOf(vs)), "×") + "–" + FormatRatio(maxOf(vs)), nil
		},
		"table":  func() string { return resultsTable(r) },
		"list":   func(s ...string) []string { return s },
		"rounds": func(name, unit string) ([]float64, error) { return r.Samples(name, unit) },
	}
}

func minOf(vs []float64) float64 {
	m := vs[0]
	for _, v := range vs[1:] {
		m = min(m, v)
	}
	return m
}

func maxOf(vs []float64) float64 {
	m := vs[0]
	for _, v := range vs[1:] {
		m = max(m, v)
	}
	return m
}

// resultsTable is every benchmark of the file, each unit's median with
// the farthest round's distance from it in per cent.
func resultsTable(r *Results) string {
	var b strings.Builder
	b.WriteString("| benchmark | time/op | B/op | allocs/op | its own figures |\n| --- | ---: | ---: | ---: | --- |\n")
	cell := func(vs []float64, unit string) string {
		m := Median(vs)
		s := FormatNumber(m)
		if unit != "" {
			s += " " + unit
		}
		if spread := max(maxOf(vs)-m, m-minOf(vs)); m != 0 && spread != 0 {
			s += fmt.Sprintf(" ± %.0f%%", spread/m*100)
		}
		return s
	}
	for _, n := range r.Names {
		row := map[string]string{}
		var own []string
		for _, unit := range r.units[n] {
			vs := r.samples[n][unit]
			switch unit {
			case "ns/op":
				row[unit] = cell(vs, "ns")
			case "B/op", "allocs/op":
				row[unit] = cell(vs, "")
			default:
				own = append(own, cell(vs, unit))
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", n, row["ns/op"], row["B/op"], row["allocs/op"], strings.Join(own, ", "))
	}
	return strings.TrimRight(b.String(), "\n")
}

// Figures renders a region's template over the results file it names
// (relative to root), followed by the line that says where the figures
// come from, with links relative to page. A file not there yet renders
// as a line saying how to make it.
func Figures(root, page, file, tmpl string) (string, error) {
	suite := strings.TrimSuffix(filepath.Base(file), ".txt")
	mk := "make bench-figures SUITES=" + suite
	r, err := ReadResults(filepath.Join(root, filepath.FromSlash(file)))
	if os.IsNotExist(err) {
		// Nothing to run it on yet, but a template that does not parse
		// is wrong now.
		if _, err := template.New(file).Funcs(figureFuncs(&Results{})).Parse(tmpl); err != nil {
			return "", err
		}
		return fmt.Sprintf("*Not measured yet: `%s` writes `%s`, then `go test -run TestFigures -update` in docs/ puts its figures here.*", mk, file), nil
	}
	if err != nil {
		return "", err
	}
	t, err := template.New(file).Funcs(figureFuncs(r)).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, r); err != nil {
		return "", err
	}
	rel, err := filepath.Rel(filepath.Dir(filepath.Join(root, page)), filepath.Join(root, filepath.FromSlash(file)))
	if err != nil {
		return "", err
	}
	commands := "`" + mk + "`"
	if len(r.Commands) > 0 {
		commands = "`" + mk + "`, which runs `" + strings.Join(r.Commands, "` and `") + "`"
	}
	machine := "on the project's shared 2-core VM, loaded by other work"
	if r.Machine == "quiet" {
		machine = "on the project's 2-core VM with nothing else running"
	}
	fmt.Fprintf(&b, "\n\n<sub>Generated from [`%s`](%s) (%s, %d rounds, %s: read the ratios, taken round by round; `benchstat %s` gives the same medians with their confidence intervals). Reproduce: %s, then `go test -run TestFigures -update` in docs/.</sub>",
		file, filepath.ToSlash(rel), r.Date, r.Rounds, machine, file, commands)
	return strings.TrimSpace(b.String()), nil
}

// CheckFigures renders every figures region of the pages and compares
// it with the page's text. It returns the problems and, for each page
// that differs, the page as it should read (for -update).
func CheckFigures(root string, pages []string) ([]Problem, map[string]string) {
	var problems []Problem
	fixed := map[string]string{}
	for _, page := range pages {
		data, err := os.ReadFile(filepath.Join(root, page))
		if err != nil {
			problems = append(problems, Problem{page, err.Error()})
			continue
		}
		lines := strings.Split(string(data), "\n")
		var out []string
		changed := false
		for i := 0; i < len(lines); i++ {
			line := lines[i]
			out = append(out, line)
			if !strings.HasPrefix(line, figuresOpen) {
				continue
			}
			where := fmt.Sprintf("%s:%d", page, i+1)
			file := strings.TrimSpace(strings.TrimPrefix(line, figuresOpen))
			closeAt, endAt := -1, -1
			for j := i + 1; j < len(lines); j++ {
				if closeAt < 0 && strings.TrimSpace(lines[j]) == "-->" {
					closeAt = j
				}
				if strings.TrimSpace(lines[j]) == figuresEnd {
					endAt = j
					break
				}
			}
			if closeAt < 0 || endAt < 0 {
				problems = append(problems, Problem{where, "a figures region needs its template closed by a line `-->`, then `" + figuresEnd + "` after the generated text"})
				continue
			}
			want, err := Figures(root, page, file, strings.Join(lines[i+1:closeAt], "\n"))
			if err != nil {
				problems = append(problems, Problem{where, err.Error()})
				out = append(out, lines[i+1:endAt+1]...)
				i = endAt
				continue
			}
			got := strings.TrimSpace(strings.Join(lines[closeAt+1:endAt], "\n"))
			if got != want {
				problems = append(problems, Problem{where, fmt.Sprintf(
					"the figures differ from what %s gives: run `go test -run TestFigures -update` in docs/ (the text between `-->` and `%s` is generated: edit the template above it instead)\n%s",
					file, figuresEnd, diff(want, got))})
				changed = true
			}
			out = append(out, lines[i+1:closeAt+1]...)
			out = append(out, want, figuresEnd)
			i = endAt
		}
		if changed {
			fixed[page] = strings.Join(out, "\n")
		}
	}
	return problems, fixed
}

// typedFigure matches what reads as a measurement: a time in ns or µs, a
// ratio (1.15×, not 4×`InFlight`), a rate per second, a percentile;
// outside code spans.
var typedFigure = regexp.MustCompile("\\d(?:[\\d,.]*\\d)?\\s?(?:ns|µs)\\b|\\d×(?:[^`\\w]|$)|\\d\\s?(?:rows|msgs|events|commands|sagas|invocations|messages)/s\\b|\\bp(?:50|99)\\s+\\d")

// CheckTypedFigures fails on a measurement typed into a page outside a
// figures region (code blocks aside): it would go stale without a test
// noticing. A figure that is not measured (a default, a bound the code
// sets) is written in words or without the units the check reads.
func CheckTypedFigures(root string, pages []string) []Problem {
	var problems []Problem
	for _, page := range pages {
		data, err := os.ReadFile(filepath.Join(root, page))
		if err != nil {
			problems = append(problems, Problem{page, err.Error()})
			continue
		}
		inRegion, fence := false, ""
		for n, line := range strings.Split(string(data), "\n") {
			switch {
			case fence != "":
				if strings.TrimSpace(line) == fence {
					fence = ""
				}
				continue
			case strings.HasPrefix(line, figuresOpen):
				inRegion = true
				continue
			case strings.TrimSpace(line) == figuresEnd:
				inRegion = false
				continue
			}
			if inRegion {
				continue
			}
			if m := fenceOpen.FindStringSubmatch(line); m != nil {
				fence = m[1]
				continue
			}
			if m := typedFigure.FindString(codeSpanRE.ReplaceAllString(line, "C")); m != "" { // code is code: `10µs`, `-benchtime 2000x`
				problems = append(problems, Problem{fmt.Sprintf("%s:%d", page, n+1), fmt.Sprintf(
					"%q reads as a typed measurement: generate it in a `%s…` region from a file of benchmarks/results/ (see docs/perf.go), or drop it if no benchmark backs it", m, figuresOpen)})
			}
		}
	}
	return problems
}
