package fxsaga_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An operator's list of sagas: the newest first (ids are random, so only
// the creation time orders them), paged, with the total; a saga created
// before the store kept the time counts as the oldest.
func TestPageListsTheNewestFirst(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		ctx := context.Background()
		store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
		fxsaga.SetClock(store, func() time.Time { return at })
		const n = 7
		for i := range n {
			at = at.Add(time.Minute)
			st := fxsaga.State{ID: "saga-" + strconv.Itoa(n-i), Name: "listed", Status: fxsaga.Failed, Context: []byte("{}"), Version: 1}
			require.NoError(t, store.Create(ctx, st))
		}
		// Created before migration 0005: created_ns 0.
		require.NoError(t, store.Create(ctx, fxsaga.State{ID: "saga-0", Name: "listed", Status: fxsaga.Failed, Context: []byte("{}"), Version: 1}))
		_, err = d.DB.Exec("UPDATE fxcqrs_sagas SET created_ns = 0 WHERE id = 'saga-0'")
		require.NoError(t, err)
		require.NoError(t, store.Create(ctx, fxsaga.State{ID: "other", Name: "other", Status: fxsaga.Failed, Context: []byte("{}"), Version: 1}))

		ids := func(states []fxsaga.State) []string {
			out := make([]string, len(states))
			for i, st := range states {
				out[i] = st.ID
			}
			return out
		}
		page, total, err := store.Page(ctx, fxsaga.Filter{Name: "listed", Status: fxsaga.Failed, Limit: 3})
		require.NoError(t, err)
		assert.Equal(t, n+1, total)
		assert.Equal(t, []string{"saga-1", "saga-2", "saga-3"}, ids(page), "the newest first")
		assert.Equal(t, at, page[0].Created.UTC())
		page, _, err = store.Page(ctx, fxsaga.Filter{Name: "listed", Limit: 3, Offset: 6})
		require.NoError(t, err)
		assert.Equal(t, []string{"saga-7", "saga-0"}, ids(page), "the last page: the undated one last")
		page, _, err = store.Page(ctx, fxsaga.Filter{Name: "listed", Limit: 2, OldestFirst: true})
		require.NoError(t, err)
		assert.Equal(t, []string{"saga-0", "saga-7"}, ids(page))
		assert.True(t, page[0].Created.IsZero())
		_, total, err = store.Page(ctx, fxsaga.Filter{})
		require.NoError(t, err)
		assert.Equal(t, n+2, total)
	})
}
