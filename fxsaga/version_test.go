package fxsaga_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// GiftOrder is version 2 of a saga's context: version 1 had a "label"
// where it has a "note".
type GiftOrder struct {
	ID   int    `json:"id"`
	Note string `json:"note"`
}

var labelToNote = fxsaga.ContextUpcaster{From: 1, Up: func(c []byte) ([]byte, error) {
	return bytes.Replace(c, []byte(`"label"`), []byte(`"note"`), 1), nil
}}

// giftSaga waits for the order's Paid and records the note it then has.
func giftSaga(notes chan<- string, ups ...fxsaga.ContextUpcaster) *fxsaga.Saga[GiftOrder] {
	// snippet:saga-version
	return fxsaga.Define[GiftOrder]("gift order", fxsaga.Await(fxsaga.Wait[GiftOrder, Paid]{
		Key:    func(o *GiftOrder) string { return strconv.Itoa(o.ID) },
		Match:  func(p Paid) string { return p.OrderID },
		Within: time.Hour,
		Then: func(_ context.Context, o *GiftOrder, _ Paid) error {
			notes <- o.Note
			return nil
		},
	})).Version(2, ups...) // ups: fxsaga.ContextUpcaster{From: 1, Up: labelToNote}
	// end snippet
}

// A saga that waits with a context stored by code before its context's
// version 2, on each database: with the upcaster, the event resumes it
// and its step reads the context as version 2, stored as version 2 after;
// without it, it is set aside with a reason naming the context type and
// both versions, its step never run, its context kept as it was.
func TestWaitingContextIsUpcast(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		for _, withUpcaster := range []bool{true, false} {
			ctx := context.Background()
			rig := newSQLWait(t, d, newClock(), false)
			id := uuid.NewString()
			require.NoError(t, rig.store.Create(ctx, fxsaga.State{
				ID: id + strconv.FormatBool(withUpcaster), Name: "gift order", Status: fxsaga.Waiting, Step: 0, Version: 1,
				Context: []byte(`{"id":7,"label":"with love"}`), Awaiting: "fxsaga_test.Paid", Key: "7", Deadline: time.Now().Add(time.Hour),
			}))
			notes := make(chan string, 1)
			var ups []fxsaga.ContextUpcaster
			if withUpcaster {
				ups = append(ups, labelToNote)
			}
			s := giftSaga(notes, ups...)
			require.NoError(t, rig.r.Add(s))
			bad, err := fxsaga.UnreachableContexts(ctx, rig.store, s)
			require.NoError(t, err)
			if !withUpcaster {
				require.Len(t, bad, 1, "the start check names it")
				assert.Equal(t, fxsaga.StoredContext{Saga: "gift order", Version: 1, Sagas: 1}, bad[0].StoredContext)
				assert.Contains(t, bad[0].Reason, "version 1 of fxsaga_test.GiftOrder, which no upcaster brings to version 2")
			} else {
				assert.Empty(t, bad)
			}
			err = fxcqrs.Publish(inbound(ctx, rig.bus, uuid.NewString()), rig.m, Paid{OrderID: "7"})
			st, lerr := rig.store.Load(ctx, id+strconv.FormatBool(withUpcaster))
			require.NoError(t, lerr)
			if withUpcaster {
				require.NoError(t, err)
				assert.Equal(t, "with love", <-notes)
				assert.Equal(t, fxsaga.Completed, st.Status)
				assert.Equal(t, 2, st.ContextVersion)
				var c GiftOrder
				require.NoError(t, json.Unmarshal(st.Context, &c))
				assert.Equal(t, GiftOrder{ID: 7, Note: "with love"}, c)
				continue
			}
			assert.Equal(t, fxsaga.SetAside, st.Status, "%v", err)
			assert.Equal(t, "its stored context is version 1 of fxsaga_test.GiftOrder, which no upcaster brings to version 2: register an fxsaga.ContextUpcaster from version 1", st.Error)
			assert.JSONEq(t, `{"id":7,"label":"with love"}`, string(st.Context), "kept as it was stored")
			assert.Equal(t, 1, st.ContextVersion)
			assert.Empty(t, notes, "never decoded wrong")
		}
	})
}

// A chain that cannot work is the definition's error.
func TestContextVersionErrors(t *testing.T) {
	t.Parallel()
	up := func(c []byte) ([]byte, error) { return c, nil }
	for ups, want := range map[*[]fxsaga.ContextUpcaster]string{
		{{From: 1, Up: up}, {From: 3, Up: up}}: `fxsaga.Define("gift order").Version: the chain from version 1 to 4 has no upcaster from version 2`,
		{{From: 2, Up: up}, {From: 2, Up: up}}: `fxsaga.Define("gift order").Version: two upcasters from version 2`,
		{{From: 4, Up: up}}:                    `fxsaga.Define("gift order").Version: an upcaster from version 4: the context is version 4, so upcasters read versions 1 to 3`,
		{{From: 1}}:                            `fxsaga.Define("gift order").Version: the upcaster from version 1 has a nil Up`,
	} {
		s := fxsaga.Define[GiftOrder]("gift order", noop{}).Version(4, *ups...)
		r := fxsaga.NewRunner(nil, fxsaga.NewMemory(), fxsaga.RunnerConfig{}, nil)
		assert.EqualError(t, r.Add(s), want)
	}
	r := fxsaga.NewRunner(nil, fxsaga.NewMemory(), fxsaga.RunnerConfig{}, nil)
	err := r.Add(fxsaga.Define[GiftOrder]("gift order", noop{}).Version(0))
	assert.EqualError(t, err, `fxsaga.Define("gift order").Version: versions start at 1: got 0`)
	assert.False(t, errors.Is(err, context.Canceled))
}

type noop struct{}

func (noop) Act(context.Context, *GiftOrder) error        { return nil }
func (noop) Compensate(context.Context, *GiftOrder) error { return nil }
