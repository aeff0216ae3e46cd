package fxconsole

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// A saga drawn: its definition's shape from the stored fxsaga.Shape, as
// inline SVG, the node where one saga stands marked. The actions go down
// the left column, their compensations up the right one; a failure
// leads to the compensation of the step before it, as the Mermaid source
// (fxsaga.Shape.MermaidAt) has it.

// The diagram's layout, in the SVG's units.
const (
	dgW          = 660
	dgActX       = 190.0 // the actions' column, its centre
	dgCompX      = 520.0 // the compensations' column
	dgBoxW       = 200.0
	dgBoxH       = 36.0
	dgFirst      = 40.0 // the start's row
	dgRow        = 84.0 // from one step to the next
	dgLabelChars = 28
)

type diagram struct {
	W, H        int
	LegendY     float64
	Title, Desc string
	Nodes       []dnode
	Edges       []dedge
}

type dnode struct {
	ID, Class, Label, Full string
	X, Y, W, H             float64 // the box's corner and size
	CX, CY                 float64 // its centre
	Hex                    string  // a wait's hexagon, instead of the box
	Notes                  []dnote
	Here                   bool
	HereX                  float64
}

type dnote struct {
	X, Y float64
	Text string
}

type dedge struct {
	X1, Y1, X2, Y2 float64
	Class, Label   string
	LX, LY         float64
}

// sagaDiagram draws sh; with st (nil: the definition alone) it marks
// where st stands, the steps its log says it acted and compensated (or,
// without a log, those before the step it stands at), and a wait's
// deadline.
func sagaDiagram(sh fxsaga.Shape, st *fxsaga.State, log []fxsaga.Entry) diagram {
	n := len(sh.Steps)
	rowY := func(i int) float64 { return dgFirst + dgRow*float64(i+1) }
	d := diagram{W: dgW, H: int(rowY(n) + dgBoxH + 30), Title: "Saga " + sh.Name, LegendY: rowY(n) + dgBoxH/2 + 22}
	box := func(id, class, label string, cx, cy float64) dnode {
		short := label
		if r := []rune(label); len(r) > dgLabelChars {
			short = string(r[:dgLabelChars-1]) + "…"
		}
		return dnode{
			ID: id, Class: class, Label: short, Full: label, CX: cx, CY: cy,
			X: cx - dgBoxW/2, Y: cy - dgBoxH/2, W: dgBoxW, H: dgBoxH, HereX: cx - dgBoxW/2 - 86,
		}
	}
	here := ""
	if st != nil {
		here = hereNode(*st)
	}
	d.Nodes = append(d.Nodes, box("start", "end", "start: "+sh.Name, dgActX, dgFirst), box("compensated", "end", "compensated", dgCompX, dgFirst))
	for i, s := range sh.Steps {
		y := rowY(i)
		act := box("act"+strconv.Itoa(i), "act", s.Name, dgActX, y)
		if s.Awaits != "" {
			act.Hex = hexagon(act)
			act.Notes = append(act.Notes, dnote{X: dgActX + 8, Y: y + dgBoxH/2 + 12, Text: "waits for " + s.Awaits + " within " + s.Within.String()})
			if s.OnTimeout != "" {
				act.Notes = append(act.Notes, dnote{X: dgActX + 8, Y: y + dgBoxH/2 + 25, Text: "no event in time: " + s.OnTimeout})
			}
			if st != nil && st.Status == fxsaga.Waiting && st.Step == i && !st.Deadline.IsZero() {
				act.Notes = append(act.Notes, dnote{X: dgActX + 8, Y: y + dgBoxH/2 + 38, Text: "deadline " + st.Deadline.UTC().Format(time.RFC3339)})
			}
		}
		comp := box("comp"+strconv.Itoa(i), "comp", "compensate "+s.Name, dgCompX, y)
		if st != nil {
			if logged(log, i, "act") || len(log) == 0 && did(*st, i) {
				act.Class += " done"
			}
			if logged(log, i, "compensate") {
				comp.Class += " done"
			}
		}
		d.Nodes = append(d.Nodes, act, comp)
		// The flow down, the failure across to the compensation before.
		// (A wait's own note says what leads on from it.)
		prevY := dgFirst
		if i > 0 {
			prevY = rowY(i - 1)
		}
		d.Edges = append(d.Edges, flow(dgActX, prevY, y))
		d.Edges = append(d.Edges, dedge{X1: dgActX + dgBoxW/2, Y1: y, X2: dgCompX - dgBoxW/2, Y2: y - dgRow + dgBoxH/2, Class: "fail"})
		d.Edges = append(d.Edges, dedge{X1: dgCompX, Y1: y - dgBoxH/2, X2: dgCompX, Y2: y - dgRow + dgBoxH/2, Class: "flow comp"})
	}
	end := box("done", "end", "completed", dgActX, rowY(n))
	if st != nil && st.Status == fxsaga.Completed {
		end.Class += " done"
	}
	d.Nodes = append(d.Nodes, end)
	last := dgFirst
	if n > 0 {
		last = rowY(n - 1)
	}
	d.Edges = append(d.Edges, flow(dgActX, last, rowY(n)))
	where := ""
	for i := range d.Nodes {
		if d.Nodes[i].ID == here {
			d.Nodes[i].Here = true
			d.Nodes[i].Class += " here"
			where = d.Nodes[i].Full
		}
	}
	names := make([]string, n)
	for i, s := range sh.Steps {
		names[i] = s.Name
		if s.Awaits != "" {
			names[i] += " (waits for " + s.Awaits + " within " + s.Within.String() + ")"
		}
	}
	d.Desc = strconv.Itoa(n) + " steps: " + strings.Join(names, ", ") + "; a failure compensates the steps before it, in reverse."
	if where != "" {
		d.Desc += " It stands at: " + where + " (" + string(st.Status) + ")."
	}
	return d
}

func flow(x, fromY, toY float64) dedge {
	return dedge{X1: x, Y1: fromY + dgBoxH/2, X2: x, Y2: toY - dgBoxH/2, Class: "flow"}
}

// hexagon is the points of a wait's hexagon in n's box.
func hexagon(n dnode) string {
	in := 14.0
	pts := [][2]float64{{n.X + in, n.Y}, {n.X + n.W - in, n.Y}, {n.X + n.W, n.CY}, {n.X + n.W - in, n.Y + n.H}, {n.X + in, n.Y + n.H}, {n.X, n.CY}}
	s := make([]string, len(pts))
	for i, p := range pts {
		s[i] = coord(p[0]) + "," + coord(p[1])
	}
	return strings.Join(s, " ")
}

// hereNode is the node where st stands, as fxsaga.Shape.MermaidAt names
// it: the step it acts, waits at, or compensates next, or its end.
func hereNode(st fxsaga.State) string {
	switch st.Status {
	case fxsaga.Running, fxsaga.Waiting, fxsaga.SetAside:
		return "act" + strconv.Itoa(st.Step)
	case fxsaga.Compensating, fxsaga.Failed:
		if st.Step < 0 {
			return "compensated"
		}
		return "comp" + strconv.Itoa(st.Step)
	case fxsaga.Completed:
		return "done"
	case fxsaga.Compensated:
		return "compensated"
	}
	return ""
}

// logged says whether log has step i's action done.
func logged(log []fxsaga.Entry, i int, action string) bool {
	return slices.ContainsFunc(log, func(e fxsaga.Entry) bool { return e.Step == i && e.Action == action && e.Err == "" })
}

// did says whether st has acted step i: the steps before the one it
// stands at, while it goes forward.
func did(st fxsaga.State, i int) bool {
	switch st.Status {
	case fxsaga.Running, fxsaga.Waiting:
		return i < st.Step
	case fxsaga.Completed:
		return true
	}
	return false
}
