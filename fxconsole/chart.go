package fxconsole

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The charts: the samples' series drawn as inline SVG by the templates
// (html/template escapes every label), no script, no style attribute:
// the geometry is computed here, the look is the page's style sheet.

// The chart's drawing area, in the SVG's own units (its viewBox is
// chartW by chartH; it scales to the page's width).
const (
	chartW, chartH = 640, 200
	plotLeft       = 64.0
	plotRight      = 624.0
	plotTop        = 14.0
	plotBottom     = 164.0
	maxLines       = 6 // lines per chart: the largest series
	tableRows      = 12
)

// series is one named line of values over time.
type series struct {
	Name   string
	Times  []time.Time
	Values []float64
}

// chart is what the chart template draws.
type chart struct {
	ID, Title, Unit, Desc string
	Lines                 []chartLine
	XTicks, YTicks        []tick
	Marks                 []chartMark
	YMax                  float64
	// Geometry, for the template and the tests that read it back.
	W, H                     int
	Left, Right, Top, Bottom float64
	YLabelX, XLabelY         float64
	// Empty: nothing to draw yet.
	Empty bool
	// Now is the newest value of each line, said in words.
	Now string
	// Head and Rows are the newest samples as a table: the chart's text
	// alternative.
	Head []string
	Rows [][]string
}

// chartLine is one series drawn: its polyline and, for the tests and
// for readers without the picture, its values.
type chartLine struct {
	Name, Class     string
	Points          string // x,y pairs
	Values          string // the values drawn, space-separated
	LastX, LastY    float64
	Current, Single bool
	Latest          string
}

type tick struct {
	Pos   float64
	Label string
}

type chartMark struct {
	X     float64
	Label string
}

// repairMark is a repair at a time, drawn as a mark on the charts.
type repairMark struct {
	At    time.Time
	Label string
}

// newChart lays out ss over [from, to] with marks, in unit.
func newChart(id, title, unit, desc string, from, to time.Time, ss []series, marks []repairMark) chart {
	c := chart{
		ID: id, Title: title, Unit: unit, Desc: desc, W: chartW, H: chartH,
		Left: plotLeft, Right: plotRight, Top: plotTop, Bottom: plotBottom,
		YLabelX: plotLeft - 6, XLabelY: plotBottom + 20,
	}
	if len(ss) > maxLines {
		ss = ss[:maxLines]
	}
	top := 0.0
	points := 0
	for _, s := range ss {
		for _, v := range s.Values {
			top = max(top, v)
			points++
		}
	}
	if points == 0 {
		c.Empty = true
		return c
	}
	if !to.After(from) {
		from = to.Add(-time.Minute)
	}
	c.YMax = niceMax(top)
	span := float64(to.Sub(from))
	x := func(t time.Time) float64 { return plotLeft + (plotRight-plotLeft)*float64(t.Sub(from))/span }
	y := func(v float64) float64 { return plotBottom - (plotBottom-plotTop)*v/c.YMax }
	for i := range 3 {
		v := c.YMax * float64(i) / 2
		c.YTicks = append(c.YTicks, tick{Pos: y(v), Label: number(v)})
	}
	layout := "15:04"
	if to.Sub(from) < 5*time.Minute {
		layout = "15:04:05"
	}
	for _, t := range timeTicks(from, to) {
		c.XTicks = append(c.XTicks, tick{Pos: x(t), Label: t.UTC().Format(layout)})
	}
	var now []string
	for i, s := range ss {
		l := chartLine{Name: s.Name, Class: "s" + strconv.Itoa(i), Single: len(s.Values) == 1}
		var pts, vals []string
		for j, v := range s.Values {
			l.LastX, l.LastY = x(s.Times[j]), y(v)
			pts = append(pts, coord(l.LastX)+","+coord(l.LastY))
			vals = append(vals, number(v))
		}
		l.Points, l.Values = strings.Join(pts, " "), strings.Join(vals, " ")
		if n := len(s.Values); n > 0 {
			l.Latest = number(s.Values[n-1])
			now = append(now, strings.TrimSpace(s.Name+" "+l.Latest+" "+unit))
		}
		c.Lines = append(c.Lines, l)
	}
	c.Now = strings.Join(now, ", ")
	for _, m := range marks {
		if m.At.Before(from) || m.At.After(to) {
			continue
		}
		c.Marks = append(c.Marks, chartMark{X: x(m.At), Label: m.At.UTC().Format("15:04:05") + " " + m.Label})
	}
	c.table(ss)
	return c
}

// table fills the chart's text alternative: the newest samples, the
// newest first.
func (c *chart) table(ss []series) {
	c.Head = []string{"At (UTC)"}
	times := map[time.Time][]string{}
	var order []time.Time
	for i, s := range ss {
		c.Head = append(c.Head, s.Name+" ("+c.Unit+")")
		for j, t := range s.Times {
			row, ok := times[t]
			if !ok {
				order = append(order, t)
				row = make([]string, len(ss))
			}
			row[i] = number(s.Values[j])
			times[t] = row
		}
	}
	slices.SortFunc(order, time.Time.Compare)
	for k := len(order) - 1; k >= 0 && len(c.Rows) < tableRows; k-- {
		t := order[k]
		c.Rows = append(c.Rows, append([]string{t.UTC().Format("15:04:05")}, times[t]...))
	}
}

// timeTicks are the round times in [from, to] at the smallest step of
// 10s, 15s, 30s, 1m, 2m, 5m, 10m, 15m, 30m, 1h or 2h that makes at most
// six of them: an axis' labels that read as times.
func timeTicks(from, to time.Time) []time.Time {
	span := to.Sub(from)
	step := 2 * time.Hour
	for _, s := range []time.Duration{
		10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute,
		5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour,
	} {
		if span/s <= 5 {
			step = s
			break
		}
	}
	var out []time.Time
	for t := from.Truncate(step); !t.After(to); t = t.Add(step) {
		if !t.Before(from) {
			out = append(out, t)
		}
	}
	return out
}

// niceMax is the smallest 1, 2 or 5 times a power of ten at or above v
// (1 for nothing): the top of a chart's axis.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// number writes v as people read it: whole numbers whole, others with
// three significant digits.
func number(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func coord(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
