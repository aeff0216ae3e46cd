package fxsaga

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// A definition's shape, and its Mermaid diagram.

// Shape is a saga definition's shape: its steps' names and order, and
// its waits. Each saga keeps the shape of the definition it was started
// with (State.Shape), so that a tool without the service's code can draw
// it (Shape.Mermaid) and say where it stopped.
type Shape struct {
	Name  string      `json:"name"`
	Steps []ShapeStep `json:"steps"`
}

// ShapeStep is one step of a Shape.
type ShapeStep struct {
	Name string `json:"name"`
	// Awaits is the event type a step made with Await waits for, Within
	// how long, and OnTimeout the name of its timeout step ("": it
	// compensates).
	Awaits    string        `json:"awaits,omitempty"`
	Within    time.Duration `json:"within,omitempty"`
	OnTimeout string        `json:"onTimeout,omitempty"`
}

// Shape returns the definition's shape.
func (s *Saga[C]) Shape() Shape {
	sh := Shape{Name: s.name, Steps: make([]ShapeStep, len(s.names))}
	for i, n := range s.names {
		sh.Steps[i].Name = n
		if w, ok := s.waits[i]; ok {
			sh.Steps[i].Awaits, sh.Steps[i].Within = w.eventName(), w.within()
			if t := w.timeoutStep(); t != nil {
				sh.Steps[i].OnTimeout = stepName(t)
			}
		}
	}
	return sh
}

// Mermaid renders the saga as a Mermaid flowchart: the actions in order,
// each failure leading to the compensations of the steps before it, in
// reverse. A step that waits (Await) is a hexagon, left by the event it
// waits for and by its deadline: to its OnTimeout step, or to its
// compensation.
func (s *Saga[C]) Mermaid() string { return s.Shape().Mermaid() }

// Mermaid renders the shape as a Mermaid flowchart (see Saga.Mermaid).
func (sh Shape) Mermaid() string { return sh.mermaid("") }

// MermaidAt renders the shape with the node where st is marked (class
// "here"): the step it acts, waits at, or compensates next, or its end.
func (sh Shape) MermaidAt(st State) string {
	node := ""
	switch st.Status {
	case Running, Waiting:
		node = "act" + strconv.Itoa(st.Step)
		if slices.Contains(st.TimedOut, st.Step) && st.Status == Running {
			node = "timeout" + strconv.Itoa(st.Step)
		}
	case Compensating, Failed:
		node = "comp" + strconv.Itoa(st.Step)
		if st.Step < 0 {
			node = "compensated"
		}
	case SetAside:
		node = "act" + strconv.Itoa(st.Step)
	case Completed:
		node = "done"
	case Compensated:
		node = "compensated"
	}
	return sh.mermaid(node)
}

func (sh Shape) mermaid(here string) string {
	var b strings.Builder
	line := func(parts ...string) { b.WriteString("    " + strings.Join(parts, "") + "\n") }
	act := func(i int) string { return "act" + strconv.Itoa(i) }
	comp := func(i int) string {
		if i < 0 {
			return "compensated"
		}
		return "comp" + strconv.Itoa(i)
	}
	edge := func(from string, i int) string {
		if i > 0 && sh.Steps[i-1].Awaits != "" {
			return from + ` -- "` + sh.Steps[i-1].Awaits + `" --> `
		}
		return from + " --> "
	}
	b.WriteString("flowchart TD\n")
	line("start([", sh.Name, "])")
	prev := "start"
	for i, st := range sh.Steps {
		if st.Awaits != "" {
			line(act(i), "{{", st.Name, "}}")
		} else {
			line(act(i), "[", st.Name, "]")
		}
		line(edge(prev, i), act(i))
		prev = act(i)
	}
	line("done([completed])")
	line(edge(prev, len(sh.Steps)), "done")
	for i, st := range sh.Steps {
		if st.Awaits == "" {
			continue
		}
		next := "done"
		if i+1 < len(sh.Steps) {
			next = act(i + 1)
		}
		within := `"no ` + st.Awaits + " within " + st.Within.String() + `"`
		if st.OnTimeout != "" {
			id := "timeout" + strconv.Itoa(i)
			line(id, "[", st.OnTimeout, "]")
			line(act(i), " -. ", within, " .-> ", id)
			line(id, " --> ", next)
			line(id, " -. fails .-> ", comp(i))
		} else {
			line(act(i), " -. ", within, " .-> ", comp(i))
		}
	}
	for i, st := range sh.Steps {
		line(comp(i), "[/compensate ", st.Name, "/]")
	}
	for i := range sh.Steps {
		line(act(i), " -. fails .-> ", comp(i-1))
	}
	for i := len(sh.Steps) - 1; i >= 0; i-- {
		line(comp(i), " --> ", comp(i-1))
	}
	line("compensated([compensated])")
	if here != "" {
		line("classDef here stroke-width:4px,stroke:#d97706,fill:#fef3c7")
		line("class ", here, " here")
	}
	return b.String()
}
