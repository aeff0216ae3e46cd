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
}

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
		d.Searched = true
		d.Sagas, err = c.sagas.List(r.Context(), d.Name, fxsaga.Status(d.Status), 200)
	}
	c.render(w, r, "sagas.html", "Sagas", d, err)
}

type sagaData struct {
	State   fxsaga.State
	Log     []fxsaga.Entry
	Steps   []stepRow
	Mermaid string
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
	}
	redirect(w, r, "/sagas/"+id, notice)
}
