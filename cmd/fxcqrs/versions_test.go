package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
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
