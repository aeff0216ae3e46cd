package fxoutbox_test

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/require"
)

// A SQLite pool that may open a second connection is refused at Start,
// with the fix in the error: two writers meet with SQLITE_BUSY. The one
// connection outboxtest opens starts.
func TestStartRefusesASQLitePoolOfMoreThanOneConnection(t *testing.T) {
	t.Parallel()
	d := outboxtest.Open(t, fxoutbox.SQLite)
	ctx := context.Background()
	for _, n := range []int{0, 4} {
		d.DB.SetMaxOpenConns(n)
		err := newOutbox(t, d, fxoutbox.Config{}).Start(ctx)
		require.ErrorContains(t, err, "SetMaxOpenConns(1)", "MaxOpenConns(%d)", n)
	}
	d.DB.SetMaxOpenConns(1)
	o := newOutbox(t, d, fxoutbox.Config{})
	require.NoError(t, o.Start(ctx))
	require.NoError(t, o.Stop(ctx))
}
