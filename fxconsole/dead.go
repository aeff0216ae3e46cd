package fxconsole

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// The dead letters' pages and actions.

// deadPage is how many letters a page of the list shows.
const deadPage = 200

type deadListData struct {
	Filter  fxoutbox.DeadLetterFilter
	Letters []fxoutbox.DeadLetter
	// Total is how many letters the filter selects; From and To number
	// the page's first and last of them, newest first.
	Total, From, To int
	// Newer and Older are the offsets of the pages either side, -1 where
	// there is none.
	Newer, Older int
	// Sel is the tenant selected, which the pages' links keep.
	Sel tenantSel
}

func (c *Console) deadList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	offset, _ := strconv.Atoi(q.Get("offset"))
	f := fxoutbox.DeadLetterFilter{
		Topic: q.Get("topic"), Name: q.Get("name"), ErrorContains: q.Get("error"), Discarded: q.Get("discarded") == "on",
		NewestFirst: true, Limit: deadPage, Offset: max(offset, 0),
	}
	d := deadListData{Filter: f, Sel: selected(r)}
	admin, err := c.adminFor(r)
	switch {
	case err != nil:
	case admin == nil:
		err = errors.New("no outbox")
	default:
		if d.Letters, err = admin.ListDead(r.Context(), f); err == nil {
			d.Total, err = admin.CountDead(r.Context(), f)
		}
	}
	if len(d.Letters) > 0 {
		d.From, d.To = f.Offset+1, f.Offset+len(d.Letters)
	}
	d.Newer, d.Older = -1, -1
	if f.Offset > 0 {
		d.Newer = max(f.Offset-deadPage, 0)
	}
	if len(d.Letters) > 0 && d.To < d.Total {
		d.Older = d.To
	}
	c.render(w, r, "dead.html", "Dead letters", d, err)
}

func (c *Console) deadShow(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	admin, aerr := c.adminFor(r)
	if err != nil || aerr != nil || admin == nil {
		http.NotFound(w, r)
		return
	}
	letter, err := admin.Dead(r.Context(), id)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	c.render(w, r, "letter.html", "Dead letter "+strconv.FormatInt(id, 10), letter, nil)
}

func (c *Console) deadRepair(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if (action != "replay" && action != "discard") || c.admin == nil {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	admin, err := c.adminFor(r) // the selected tenant's: another's letters are skipped
	if err != nil {
		redirect(w, r, "/dead", action+" failed: "+err.Error())
		return
	}
	why := strings.TrimSpace(r.PostForm.Get("why"))
	if why == "" { // the form requires it; a hand-made POST must too: every repair keeps who and why
		redirect(w, r, "/dead", action+" refused: say why (the reason is kept with the repair)")
		return
	}
	var ids []int64
	for _, s := range r.PostForm["id"] {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		ids = append(ids, id)
	}
	do := admin.Replay
	if action == "discard" {
		do = admin.Discard
	}
	n, err := do(r.Context(), ids, c.cfg.Who(r), why)
	if err != nil {
		redirect(w, r, "/dead", action+" failed: "+err.Error())
		return
	}
	redirect(w, r, "/dead", fmt.Sprintf("%s: %d of %d", action, n, len(ids)))
}
