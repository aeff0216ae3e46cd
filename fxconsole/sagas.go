package fxconsole

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// The sagas' pages and marks.

type sagaListData struct {
	Name, Status, Key string
	Counts            []fxsaga.Count
	Sagas             []fxsaga.State
	Searched          bool // a list was asked for: say when it is empty
	// Paged says the list is a page of a name's or a status's sagas, the
	// newest first: Total of them, From to To on this page, and Newer and
	// Older the offsets of the pages either side (-1: none).
	Paged           bool
	Total, From, To int
	Newer, Older    int
	// Diagram is the definition's shape, when the list is of one name.
	Diagram *diagram
}

// sagaPage is how many sagas a page of the list shows.
const sagaPage = 200

func (c *Console) sagaList(w http.ResponseWriter, r *http.Request) {
	if c.sagas == nil {
		c.render(w, r, "sagas.html", "Sagas", sagaListData{}, errors.New("no saga store"))
		return
	}
	q := r.URL.Query()
	d := sagaListData{Name: q.Get("name"), Status: strings.ToUpper(q.Get("status")), Key: strings.TrimSpace(q.Get("key"))}
	var err error
	switch {
	case d.Key != "": // the sagas of a booking, an order: by business key (fxsaga.Saga.KeyBy)
		d.Searched = true
		d.Sagas, err = c.sagas.ByKey(r.Context(), d.Name, d.Key)
	case d.Name == "" && d.Status == "":
		d.Counts, err = c.sagas.Counts(r.Context())
	default:
		d.Searched, d.Paged = true, true
		offset, _ := strconv.Atoi(q.Get("offset"))
		f := fxsaga.Filter{Name: d.Name, Status: fxsaga.Status(d.Status), Limit: sagaPage, Offset: max(offset, 0)}
		d.Sagas, d.Total, err = c.sagas.Page(r.Context(), f)
		d.Newer, d.Older = -1, -1
		if len(d.Sagas) > 0 {
			d.From, d.To = f.Offset+1, f.Offset+len(d.Sagas)
			if d.To < d.Total {
				d.Older = d.To
			}
		}
		if f.Offset > 0 {
			d.Newer = max(f.Offset-sagaPage, 0)
		}
	}
	if d.Name != "" {
		for _, st := range d.Sagas {
			if sh, ok := fxsaga.ShapeOf(st); ok {
				dg := sagaDiagram(sh, nil, nil)
				d.Diagram = &dg
				break
			}
		}
	}
	c.render(w, r, "sagas.html", "Sagas", d, err)
}

type sagaData struct {
	State   fxsaga.State
	Log     []fxsaga.Entry
	Steps   []stepRow
	Mermaid string
	Diagram *diagram
}

type stepRow struct {
	Index int
	fxsaga.ShapeStep
	Here bool
}

func (c *Console) sagaShow(w http.ResponseWriter, r *http.Request) {
	if c.sagas == nil {
		http.NotFound(w, r)
		return
	}
	st, err := c.sagas.Load(r.Context(), r.PathValue("id"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	d := sagaData{State: st}
	d.Log, err = c.sagas.Entries(r.Context(), st.ID)
	if sh, ok := fxsaga.ShapeOf(st); ok {
		d.Mermaid = sh.MermaidAt(st)
		dg := sagaDiagram(sh, &st, d.Log)
		d.Diagram = &dg
		for i, s := range sh.Steps {
			d.Steps = append(d.Steps, stepRow{Index: i, ShapeStep: s, Here: i == st.Step && !st.Status.Final() || i == st.Step && st.Status == fxsaga.Failed})
		}
	}
	c.render(w, r, "saga.html", "Saga "+st.ID, d, err)
}

func (c *Console) sagaMark(w http.ResponseWriter, r *http.Request) {
	if c.sagas == nil {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, why, who := r.PathValue("id"), r.PostForm.Get("why"), c.cfg.Who(r)
	var err error
	switch r.PathValue("action") {
	case "retry":
		_, err = c.sagas.Retry(r.Context(), id, who, why)
	case "resolve":
		_, err = c.sagas.Resolve(r.Context(), id, who, why)
	case "compensate":
		step, perr := strconv.Atoi(r.PostForm.Get("from"))
		if perr != nil {
			err = errors.New("from: a step's index")
		} else {
			_, err = c.sagas.CompensateFrom(r.Context(), id, step, who, why)
		}
	default:
		http.NotFound(w, r)
		return
	}
	notice := r.PathValue("action") + ": marked; the service's recovery acts on its next pass"
	if err != nil {
		notice = r.PathValue("action") + " failed: " + err.Error()
	} else {
		c.mark(r.PathValue("action") + " saga " + id + " by " + who + ": " + why)
	}
	redirect(w, r, "/sagas/"+id, notice)
}
