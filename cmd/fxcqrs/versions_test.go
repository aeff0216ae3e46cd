package main

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// versions list shows what the tables hold by name and version (a row
// written before versions existed is version 1); versions check, given
// what the service reads, names what it cannot, and fails.
func TestVersions(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		now := time.Now().UnixNano()
		for i, meta := range []string{`{"name":"Placed"}`, `{"name":"Placed","version":"2"}`, `{"name":"Placed","version":"2"}`, `{"name":"Paid","version":"4"}`} {
			_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?)"),
				"orders", "m-"+string(rune('a'+i)), []byte(`{}`), meta, now)
			require.NoError(t, err)
		}
		cli := func(args ...string) (string, error) {
			var out bytes.Buffer
			err := run(append([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN}, args...), &out)
			return out.String(), err
		}
		list, err := cli("versions", "list")
		require.NoError(t, err)
		assert.Regexp(t, `outbox\s+Paid\s+4\s+1`, list)
		assert.Regexp(t, `outbox\s+Placed\s+1\s+1`, list)
		assert.Regexp(t, `outbox\s+Placed\s+2\s+2`, list)
		assert.NotContains(t, list, "sagas", "no saga tables: no saga contexts, and no error")

		out, err := cli("versions", "check", "-reach", "Placed=1..2", "-reach", "Paid=4")
		require.NoError(t, err)
		assert.NotContains(t, out, "outbox")

		out, err = cli("versions", "check", "-reach", "Placed=2..3", "-reach", "Paid=3")
		require.ErrorContains(t, err, "versions check: 2 stored versions no upcaster chain reaches")
		assert.Regexp(t, `outbox\s+Paid\s+4\s+1\s+version 4 is newer than the service's version 3`, out)
		assert.Regexp(t, `outbox\s+Placed\s+1\s+1\s+version 1 has no upcaster path to version 3: the upcasters reach it from version 2 only`, out)
		assert.NotContains(t, out, "Placed  2")

		_, err = cli("versions", "check")
		require.ErrorContains(t, err, "give the -reach")
		_, err = cli("versions", "check", "-reach", "Placed=3..2")
		require.ErrorContains(t, err, "the oldest first")
	})
}

// With the saga tables, versions list shows the unfinished sagas by
// definition and context version (finished ones are no concern of a
// deploy); versions check, given the -saga versions the service reads,
// names the contexts it cannot, apart from the event names (a saga and
// an event may share a name). Without them (TestVersions), they are
// left out.
func TestVersionsSagaContexts(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		ctx := context.Background()
		require.NoError(t, fxsaga.Migrate(ctx, d.DB, d.Dialect, fxsaga.Tables{}))
		store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		for i, s := range []struct {
			name    string
			status  fxsaga.Status
			version int
		}{
			{"Placed", fxsaga.Waiting, 1},
			{"Placed", fxsaga.Running, 2},
			{"Placed", fxsaga.Waiting, 2},
			{"refund", fxsaga.Compensating, 3},
			{"refund", fxsaga.Completed, 1},
		} {
			st := fxsaga.State{ID: fmt.Sprintf("s-%d", i), Name: s.name, Status: s.status, ContextVersion: s.version, Context: []byte(`{}`)}
			if s.status == fxsaga.Waiting {
				st.Awaiting, st.Key, st.Deadline = "orders.Paid", st.ID, time.Now().Add(time.Hour)
			}
			require.NoError(t, store.Create(ctx, st))
		}
		_, err = d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?)"),
			"orders", "m-1", []byte(`{}`), `{"name":"Placed","version":"2"}`, time.Now().UnixNano())
		require.NoError(t, err)
		cli := func(args ...string) (string, error) {
			var out bytes.Buffer
			err := run(append([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN}, args...), &out)
			return out.String(), err
		}

		list, err := cli("versions", "list")
		require.NoError(t, err)
		assert.Regexp(t, `outbox\s+Placed\s+2\s+1`, list)
		assert.Regexp(t, `sagas\s+Placed\s+1\s+1`, list)
		assert.Regexp(t, `sagas\s+Placed\s+2\s+2`, list)
		assert.Regexp(t, `sagas\s+refund\s+3\s+1`, list)
		assert.NotRegexp(t, `refund\s+1`, list, "a completed saga is not listed")

		out, err := cli("versions", "check", "-reach", "Placed=2", "-saga", "Placed=1..2", "-saga", "refund=3")
		require.NoError(t, err)
		assert.NotContains(t, out, "Placed")

		out, err = cli("versions", "check", "-reach", "Placed=1..2", "-saga", "Placed=2", "-saga", "refund=2")
		require.ErrorContains(t, err, "versions check: 2 stored versions no upcaster chain reaches")
		assert.Regexp(t, `sagas\s+Placed\s+1\s+1\s+version 1 has no upcaster path to version 2`, out)
		assert.Regexp(t, `sagas\s+refund\s+3\s+1\s+version 3 is newer than the service's version 2`, out)
		assert.NotContains(t, out, "outbox", "the event Placed is read: the saga's -saga does not apply to it")

		out, err = cli("-json", "versions", "list")
		require.NoError(t, err)
		assert.Contains(t, out, `"table": "sagas"`)
	})
}
