package fxoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRelaySendsALateCommitBeforeItsKeysNextRow in a lane that two
// tenants share, which the relay reads by their shares: a row that
// commits below an id already published is still its tenant's first row
// not sent, and goes before its key's next row; what was sent is not
// sent again.
func TestRelaySharesSendALateCommitBeforeItsKeysNextRow(t *testing.T) {
	t.Parallel()
	for _, dialect := range []fxoutbox.Dialect{fxoutbox.PostgreSQL, fxoutbox.MySQL} {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			d := openDatabase(t, dialect)
			tp := fmt.Sprintf("fairlate_%d", rand.Uint32())
			var rec recorder
			b, err := fxbus.New(fxbus.Config{Publisher: &rec}, nil, nil)
			require.NoError(t, err)
			o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect, Relay: fxoutbox.RelayConfig{
				PollInterval: 10 * time.Millisecond, ProgressInterval: time.Hour, // progress is not recorded meanwhile
			}}, nil)
			require.NoError(t, err)
			require.NoError(t, o.Start(context.Background()))
			defer func() { require.NoError(t, o.Stop(context.Background())) }()
			row := func(id, tenant, key string) []any {
				return []any{tp, 0, id, []byte("{}"), fmt.Sprintf(`{%q:%q,%q:%q,%q:"Keyed"}`, fxbus.MetadataKey, key, fxbus.MetadataTenant, tenant, fxbus.MetadataName), time.Now().UnixNano()}
			}
			ins := d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?, ?)")

			// Another tenant's row, published and kept (its progress is not
			// recorded): the lane holds two tenants from here on.
			_, err = d.DB.Exec(ins, row("o-1", "other", "o")...)
			require.NoError(t, err)
			waitFor(t, func() bool { return slices.Contains(rec.got(), "o-1") })

			late, err := d.DB.Begin() // k's first row takes its id, and commits late
			require.NoError(t, err)
			defer func() { _ = late.Rollback() }()
			_, err = late.Exec(ins, row("k-1", "acme", "k")...)
			require.NoError(t, err)
			_, err = d.DB.Exec(ins, row("z-1", "acme", "z")...) // a higher id of the same tenant, published first
			require.NoError(t, err)
			waitFor(t, func() bool { return slices.Contains(rec.got(), "z-1") })
			require.NoError(t, late.Commit())
			_, err = d.DB.Exec(ins, row("k-2", "acme", "k")...)
			require.NoError(t, err)
			waitFor(t, func() bool { return slices.Contains(rec.got(), "k-2") })
			got := rec.got()
			require.Contains(t, got, "k-1", "k-2 was sent and k-1, committed before it was written, was not: %v", got)
			require.Less(t, slices.Index(got, "k-1"), slices.Index(got, "k-2"), "k's rows in order: %v", got)

			_, err = d.DB.Exec(ins, row("o-2", "other", "o")...)
			require.NoError(t, err)
			waitFor(t, func() bool { return slices.Contains(rec.got(), "o-2") })
			got = rec.got()
			for _, id := range []string{"o-1", "z-1", "k-1", "k-2", "o-2"} {
				assert.Equal(t, 1, countOf(got, id), "%s sent once: %v", id, got)
			}
		})
	}
}
