package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deadOf writes an outbox dead letter, id, of tenant ("": none, the
// default tenant) into d.
func deadOf(t *testing.T, d outboxtest.Database, id int, tenant string) {
	t.Helper()
	meta := `{"name":"OrderPlaced"}`
	if tenant != "" {
		meta = fmt.Sprintf(`{"name":"OrderPlaced","tenant":%q}`, tenant)
	}
	_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		id, "orders", fmt.Sprintf("m-%d", id), []byte(`{}`), meta, "refused", time.Now().UnixNano()+int64(id))
	require.NoError(t, err)
}

// -tenant on each database: the listings show each letter's tenant and
// select one tenant's (the default tenant's by ""), a tenant's repair
// leaves another tenant's letter alone though asked for it, and repair
// list shows the tenant each repair was recorded with.
func TestCommandLinePerTenant(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		deadOf(t, d, 1, "acme")
		deadOf(t, d, 2, "globex")
		deadOf(t, d, 3, "")
		cli := func(args ...string) string {
			t.Helper()
			var out bytes.Buffer
			require.NoError(t, run(append([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN}, args...), &out), "fxcqrs %v", args)
			return out.String()
		}
		all := cli("dead", "list")
		assert.Regexp(t, `(?m)^1\s+acme\s+orders`, all)
		assert.Regexp(t, `(?m)^2\s+globex\s+orders`, all)
		assert.Regexp(t, `(?m)^3\s+\(default\)\s+orders`, all)
		acme := cli("-tenant", "acme", "dead", "list")
		assert.Contains(t, acme, "m-1")
		assert.NotContains(t, acme, "m-2")
		assert.NotContains(t, acme, "m-3")
		defaults := cli("-tenant", "", "dead", "list")
		assert.Contains(t, defaults, "m-3")
		assert.NotContains(t, defaults, "m-1", "-tenant \"\" is the default tenant, not every tenant")
		assert.Contains(t, cli("dead", "show", "1"), "tenant:   acme")
		assert.Equal(t, "TENANT\n(default)\nacme\nglobex\n", cli("tenant", "list"))

		assert.Contains(t, cli("-tenant", "acme", "dead", "replay", "-who", "ops", "-why", "back", "2"), "replay: 0 of 1")
		assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox_dead WHERE id = 2"), "globex's letter stays")
		assert.Contains(t, cli("-tenant", "acme", "dead", "replay", "-who", "ops", "-why", "back", "1", "2"), "replay: 1 of 2")
		assert.Equal(t, 1, outboxtest.Count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_outbox WHERE message_id = 'm-1'"), "acme's replayed")
		assert.Contains(t, cli("dead", "discard", "-who", "ops", "-why", "test", "2"), "discard: 1 of 1")
		repairs := cli("repair", "list")
		assert.Regexp(t, `discard\s+globex\s+dead letters 2\s+ops\s+test`, repairs)
		assert.Regexp(t, `replay\s+acme\s+dead letters 1\s+ops\s+back`, repairs)
		assert.NotContains(t, cli("-tenant", "acme", "repair", "list"), "globex")
	})
}

// -schema on PostgreSQL: the command line reads a tenant's store that is
// a schema of its own (the connection's search_path), not the tables of
// the default schema beside it; a schema that is not a plain identifier
// is refused before anything connects.
func TestCommandLineSchema(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.PostgreSQL)
	ctx := context.Background()
	schema := fmt.Sprintf("tenant_%d", rand.Uint64()%1_000_000)
	_, err := d.DB.ExecContext(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	tenantDB, err := openDB(fxoutbox.PostgreSQL, d.DSN, schema)
	require.NoError(t, err)
	defer tenantDB.Close()
	require.NoError(t, fxoutbox.Migrate(ctx, tenantDB, fxoutbox.PostgreSQL, fxoutbox.Tables{}))
	deadOf(t, outboxtest.Database{Dialect: fxoutbox.PostgreSQL, DB: tenantDB}, 7, "acme")
	deadOf(t, d, 8, "")

	cli := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(append([]string{"-dialect", "postgresql", "-dsn", d.DSN}, args...), &out)
		return out.String(), err
	}
	out, err := cli("-schema", schema, "dead", "list")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^7\s+acme\s+orders`, out)
	assert.NotContains(t, out, "m-8", "the default schema's letter")
	out, err = cli("dead", "list")
	require.NoError(t, err)
	assert.Contains(t, out, "m-8")
	assert.NotContains(t, out, "m-7")
	out, err = cli("-schema", schema, "dead", "replay", "-who", "ops", "-why", "back", "7")
	require.NoError(t, err)
	assert.Contains(t, out, "replay: 1 of 1")
	var n int
	require.NoError(t, tenantDB.QueryRow("SELECT COUNT(*) FROM fxcqrs_outbox_repairs WHERE tenant = 'acme'").Scan(&n))
	assert.Equal(t, 1, n, "recorded in the tenant's store, with its tenant")

	for _, bad := range []string{`x"; DROP SCHEMA public CASCADE; --`, "Tenant", "a-b"} {
		_, err := cli("-schema", bad, "dead", "list")
		require.ErrorContains(t, err, "not a plain lower-case identifier", bad)
	}
	err = run([]string{"-dialect", "sqlite", "-dsn", "file::memory:", "-schema", schema, "dead", "list"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "PostgreSQL's")
}

// The saga commands do not select by tenant: -tenant with one is refused,
// rather than quietly reading every tenant's sagas.
func TestSagaCommandsRefuseTenant(t *testing.T) {
	t.Parallel()
	err := run([]string{"-dialect", "sqlite", "-dsn", t.TempDir() + "/x.db", "-tenant", "acme", "saga", "list"}, io.Discard)
	require.ErrorContains(t, err, "-tenant does not select sagas")
}
