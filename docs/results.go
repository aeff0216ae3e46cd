package docs

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Results is one file of benchmarks/results/: the raw output of `go test
// -bench`, run Rounds times with -count 1 by benchmarks/figures.sh, after
// the script's own lines (command:, rounds:, date:, and machine: for a
// suite meant for a quiet machine).
type Results struct {
	Commands []string // the go test command of each round, in order
	Rounds   int
	Date     string
	Machine  string   // "quiet": run with nothing else on the VM; "": the VM shared with other work
	Names    []string // the benchmarks, in the order of their first line

	// samples[name][unit] holds one value a round, in round order;
	// units[name] the units in the order go test printed them.
	samples map[string]map[string][]float64
	units   map[string][]string
}

// procsSuffix is go test's -GOMAXPROCS suffix of a benchmark's name.
var procsSuffix = regexp.MustCompile(`-\d+$`)

// ReadResults parses a results file. Every benchmark must have one line
// a round: a name that appears more or less often would pair one round's
// figure with another's in a ratio.
func ReadResults(path string) (*Results, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read only
	r := &Results{samples: map[string]map[string][]float64{}, units: map[string][]string{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "command: "):
			r.Commands = append(r.Commands, strings.TrimPrefix(line, "command: "))
		case strings.HasPrefix(line, "rounds: "):
			if r.Rounds, err = strconv.Atoi(strings.TrimPrefix(line, "rounds: ")); err != nil {
				return nil, fmt.Errorf("%s:%d: rounds: %w", path, n, err)
			}
		case strings.HasPrefix(line, "date: "):
			r.Date = strings.TrimPrefix(line, "date: ")
		case strings.HasPrefix(line, "machine: "):
			r.Machine = strings.TrimPrefix(line, "machine: ")
		case strings.HasPrefix(line, "Benchmark"):
			fields := strings.Fields(line)
			if len(fields) < 4 || len(fields)%2 != 0 {
				continue // a benchmark's log line, not its result
			}
			if _, err := strconv.Atoi(fields[1]); err != nil {
				continue
			}
			name := procsSuffix.ReplaceAllString(strings.TrimPrefix(fields[0], "Benchmark"), "")
			if _, ok := r.samples[name]; !ok {
				r.samples[name] = map[string][]float64{}
				r.Names = append(r.Names, name)
			}
			for i := 2; i+1 < len(fields); i += 2 {
				v, err := strconv.ParseFloat(fields[i], 64)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: %q is not a number: %w", path, n, fields[i], err)
				}
				unit := fields[i+1]
				if _, ok := r.samples[name][unit]; !ok {
					r.units[name] = append(r.units[name], unit)
				}
				r.samples[name][unit] = append(r.samples[name][unit], v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if r.Rounds == 0 {
		return nil, fmt.Errorf("%s: no `rounds:` line: write the file with benchmarks/figures.sh", path)
	}
	if len(r.Names) == 0 {
		return nil, fmt.Errorf("%s: no benchmark results", path)
	}
	for _, name := range r.Names {
		for unit, vs := range r.samples[name] {
			if len(vs) != r.Rounds {
				return nil, fmt.Errorf("%s: %s has %d %s figures for %d rounds: one a round, or its ratios would pair figures of different rounds (two benchmarks of one name?)", path, name, len(vs), unit, r.Rounds)
			}
		}
	}
	return r, nil
}

// Samples returns a benchmark's figures in a unit, one a round.
func (r *Results) Samples(name, unit string) ([]float64, error) {
	units, ok := r.samples[name]
	if !ok {
		return nil, fmt.Errorf("no benchmark %q (the file has %s)", name, strings.Join(r.Names, ", "))
	}
	vs, ok := units[unit]
	if !ok {
		return nil, fmt.Errorf("benchmark %q has no %q figures (it has %s)", name, unit, strings.Join(r.units[name], ", "))
	}
	return vs, nil
}

// Ratios returns a's figure ÷ b's, round by round: both ran in the same
// round, so whatever the machine did then fell on both.
func (r *Results) Ratios(a, b, unit string) ([]float64, error) {
	return r.combine(a, b, unit, func(x, y float64) float64 { return x / y })
}

// Differences returns a's figure − b's, round by round.
func (r *Results) Differences(a, b, unit string) ([]float64, error) {
	return r.combine(a, b, unit, func(x, y float64) float64 { return x - y })
}

func (r *Results) combine(a, b, unit string, op func(x, y float64) float64) ([]float64, error) {
	xs, err := r.Samples(a, unit)
	if err != nil {
		return nil, err
	}
	ys, err := r.Samples(b, unit)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(xs))
	for i := range xs {
		out[i] = op(xs[i], ys[i])
	}
	return out, nil
}

// Median returns the middle value (the mean of the two middle ones for an
// even count), as benchstat reports a benchmark's centre.
func Median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// FormatNumber writes a figure as the pages do: whole numbers with
// thousands separators from 100 up, three significant digits below.
func FormatNumber(v float64) string {
	neg := v < 0
	if neg {
		v = -v
	}
	var s string
	switch {
	case v >= 100:
		s = groupThousands(strconv.FormatFloat(v, 'f', 0, 64))
	case v == 0:
		s = "0"
	default:
		s = strconv.FormatFloat(v, 'g', 3, 64)
		if strings.ContainsAny(s, "e") { // tiny: 3 significant digits in plain notation
			s = strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	if neg {
		return "−" + s
	}
	return s
}

// FormatRatio writes a ratio with its sign ×: whole from 10 up, two
// decimals below.
func FormatRatio(v float64) string {
	if v >= 10 {
		return groupThousands(strconv.FormatFloat(v, 'f', 0, 64)) + "×"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "×"
}

func groupThousands(digits string) string {
	if len(digits) <= 3 {
		return digits
	}
	var b strings.Builder
	lead := len(digits) % 3
	if lead > 0 {
		b.WriteString(digits[:lead])
	}
	for i := lead; i < len(digits); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(digits[i : i+3])
	}
	return b.String()
}
